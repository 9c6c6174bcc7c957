// Server processes for the route guard benchmark (bench/guard.ts), each pinned by the caller to one core:
//   noop-ext-authz  grpc-js serving envoy.service.auth.v3.Authorization/Check with protobuf-es
//                   (de)serialization and a fixed OK answer: the baseline for ext_authz
//   noop-http       a bare node:http handler answering 200 with an empty body: the baseline for /forward-auth
//   app             the whole service (startApp) from the environment (routes, JWKS, database)
// Prints one JSON line {"grpcPort": N, "httpPort": N} when listening; stops on SIGTERM.

import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  type CheckRequest,
  CheckRequestSchema,
  type CheckResponse,
  CheckResponseSchema,
} from "../gen/envoy/service/auth/v3/external_auth_pb.ts";
import { startApp } from "../src/app.ts";
import { loadConfig } from "../src/config.ts";
import { createLogger } from "../src/logger.ts";
import { bindGrpcServer } from "../src/server/grpc.ts";

const mode = process.argv[2] ?? "app";
let grpcPort = 0;
let httpPort = 0;
let stop: () => Promise<void>;

if (mode === "noop-ext-authz") {
  const answer = create(CheckResponseSchema, {
    status: { code: 0 },
    httpResponse: { case: "okResponse", value: {} },
  });
  const server = new grpc.Server();
  server.addService(
    {
      Check: {
        path: "/envoy.service.auth.v3.Authorization/Check",
        requestStream: false,
        responseStream: false,
        requestDeserialize: (bytes: Buffer) => fromBinary(CheckRequestSchema, bytes),
        requestSerialize: (message: CheckRequest) => Buffer.from(toBinary(CheckRequestSchema, message)),
        responseSerialize: (message: CheckResponse) => Buffer.from(toBinary(CheckResponseSchema, message)),
        responseDeserialize: (bytes: Buffer) => fromBinary(CheckResponseSchema, bytes),
      },
    },
    { Check: (_call: unknown, callback: grpc.sendUnaryData<CheckResponse>) => callback(null, answer) },
  );
  grpcPort = await bindGrpcServer(server, "127.0.0.1", 0);
  stop = () => new Promise((resolve) => server.tryShutdown(() => resolve()));
} else if (mode === "noop-http") {
  const server = createServer((_request, response) => {
    response.writeHead(200);
    response.end();
  });
  server.listen(0, "127.0.0.1");
  await new Promise((resolve) => server.once("listening", resolve));
  httpPort = (server.address() as AddressInfo).port;
  stop = () => {
    server.closeAllConnections();
    return new Promise((resolve) => server.close(() => resolve()));
  };
} else {
  const config = loadConfig({
    ...process.env,
    AUTHZ_GRPC_LISTEN: "127.0.0.1:0",
    AUTHZ_HTTP_LISTEN: "127.0.0.1:0",
  });
  const app = await startApp(config, createLogger("error"));
  grpcPort = app.grpcPort;
  httpPort = app.httpPort;
  stop = () => app.shutdown();
}

process.stdout.write(`${JSON.stringify({ grpcPort, httpPort })}\n`);
process.once("SIGTERM", () => {
  void stop().then(() => process.exit(0));
});
