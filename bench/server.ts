// A server process for the benchmarks, so the load generator (h2load) and the server never share a core's
// event loop. Modes:
//   raw     grpc-js with protobuf-es (de)serializers and a no-op CheckPermission: the baseline
//   bridge  our grpc-js bridge (src/server/grpc.ts) with a no-op Connect implementation
//   app     the whole service (startApp) on DATABASE_URL, open mode
// Prints one JSON line {"port": N} when listening; stops on SIGTERM.

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  AuthzService,
  type CheckPermissionRequest,
  CheckPermissionRequestSchema,
  type CheckPermissionResponse,
  CheckPermissionResponseSchema,
} from "../gen/flip/authz/v1/authz_pb.ts";
import { startApp } from "../src/app.ts";
import { loadConfig } from "../src/config.ts";
import { createLogger } from "../src/logger.ts";
import { addGrpcService, bindGrpcServer, createGrpcServer } from "../src/server/grpc.ts";

const mode = process.argv[2] ?? "app";
const silent = { error() {}, warn() {}, info() {} };
const answer = create(CheckPermissionResponseSchema, { allowed: true, grantedBy: ["Admin"], checkedAt: "1" });
let stop: () => Promise<void>;
let port: number;

if (mode === "raw") {
  const server = new grpc.Server();
  server.addService(
    {
      CheckPermission: {
        path: "/flip.authz.v1.AuthzService/CheckPermission",
        requestStream: false,
        responseStream: false,
        requestDeserialize: (bytes: Buffer) => fromBinary(CheckPermissionRequestSchema, bytes),
        requestSerialize: (message: CheckPermissionRequest) =>
          Buffer.from(toBinary(CheckPermissionRequestSchema, message)),
        responseSerialize: (message: CheckPermissionResponse) =>
          Buffer.from(toBinary(CheckPermissionResponseSchema, message)),
        responseDeserialize: (bytes: Buffer) => fromBinary(CheckPermissionResponseSchema, bytes),
      },
    },
    { CheckPermission: (_call: unknown, callback: grpc.sendUnaryData<unknown>) => callback(null, answer) },
  );
  port = await bindGrpcServer(server, "127.0.0.1", 0);
  stop = () => new Promise((resolve) => server.tryShutdown(() => resolve()));
} else if (mode === "bridge") {
  const server = createGrpcServer();
  addGrpcService(server, AuthzService, { checkPermission: () => answer }, { logger: silent });
  port = await bindGrpcServer(server, "127.0.0.1", 0);
  stop = () => new Promise((resolve) => server.tryShutdown(() => resolve()));
} else {
  const config = loadConfig({
    ...process.env,
    AUTHZ_GRPC_LISTEN: "127.0.0.1:0",
    AUTHZ_HTTP_LISTEN: "127.0.0.1:0",
  });
  const app = await startApp(config, createLogger("error"));
  port = app.grpcPort;
  stop = () => app.shutdown();
}

process.stdout.write(`${JSON.stringify({ port })}\n`);
process.once("SIGTERM", () => {
  void stop().then(() => process.exit(0));
});
