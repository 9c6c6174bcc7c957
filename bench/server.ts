// A server process for the benchmarks, so the load generator and the server never share a core's event
// loop (bench/harness.ts starts it pinned with taskset, on the same Node binary as the bench). Modes:
//   noop          grpc-js with protobuf-es (de)serializers and a no-op CheckPermission, channelz off:
//                 the reference for the hot path, at its best
//   noop-channelz the same with grpc-js defaults (channelz on)
//   noop-codec    the same as noop, (de)serialized by the gRPC bridge's codec (src/server/flat-codec.ts)
//   bridge        our grpc-js bridge (src/server/grpc.ts) with a no-op Connect implementation
//   connect-noop  connect-node (HTTP/1.1) with a no-op CheckPermission
//   http-noop     bare node:http answering every POST with a fixed Connect JSON CheckPermission response
//   http-200      bare node:http answering every request 200 with an empty body: /forward-auth's reference
//   ext-authz-noop grpc-js (channelz off) serving Envoy's Authorization/Check with protobuf-es
//                 (de)serialization and a fixed OK answer: ext_authz's reference, at its best
//   app           the whole service in this process (startApp), configured from the environment
//                 (DATABASE_URL; the route guard scenario adds its JWKS and routes): the follower scenario's
//                 upstream, the route guard's subject (issue 10's targets run bin/flip-authz.js instead)
// Prints one JSON line {"port": N, "httpPort": N} when listening; stops on SIGTERM. The service itself runs
// through its real entry (bin/flip-authz.js, with the Node flags it sets): harness.ts startService.

import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import {
  create,
  type DescMessage,
  type DescMethodUnary,
  fromBinary,
  type Message,
  type MessageShape,
  toBinary,
  toJsonString,
} from "@bufbuild/protobuf";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { Authorization, CheckResponseSchema } from "../gen/envoy/service/auth/v3/external_auth_pb.ts";
import { AuthzService, CheckPermissionResponseSchema } from "../gen/flip/authz/v1/authz_pb.ts";
import { startApp } from "../src/app.ts";
import { loadConfig } from "../src/config.ts";
import { createLogger } from "../src/logger.ts";
import { methodPath } from "../src/rpc/method-name.ts";
import { codecFor } from "../src/server/flat-codec.ts";
import { addGrpcService, bindGrpcServer, createGrpcServer } from "../src/server/grpc.ts";

const mode = process.argv[2] ?? "app";
const silent = { error() {}, warn() {}, info() {} };
const answer = create(CheckPermissionResponseSchema, { allowed: true, grantedBy: ["Admin"], checkedAt: "1" });
let stop: () => Promise<void>;
let port = 0;
let httpPort = 0;

interface Codec {
  decode(bytes: Buffer): Message;
  encode(message: Message): Buffer;
}

/** protobuf-es's (de)serializers for `schema`, or with `bridgeCodec` the gRPC bridge's. */
function codec(schema: DescMessage, bridgeCodec: boolean): Codec {
  if (bridgeCodec) return codecFor(schema);
  return {
    decode: (bytes) => fromBinary(schema, bytes),
    encode: (message) => Buffer.from(toBinary(schema, message)),
  };
}

/**
 * grpc-js serving one unary method with a fixed answer, nothing else; (de)serialized by protobuf-es, or
 * with `bridgeCodec` by the gRPC bridge's codec (src/server/flat-codec.ts).
 */
function noopGrpc<I extends DescMessage, O extends DescMessage>(
  method: DescMethodUnary<I, O>,
  fixed: MessageShape<O>,
  options: grpc.ServerOptions,
  bridgeCodec = false,
): grpc.Server {
  const server = new grpc.Server(options);
  // Chosen once: the reference does nothing per call but (de)serialize and answer.
  const input = codec(method.input, bridgeCodec);
  const output = codec(method.output, bridgeCodec);
  server.addService(
    {
      [method.name]: {
        path: methodPath(method),
        requestStream: false,
        responseStream: false,
        requestDeserialize: input.decode,
        requestSerialize: input.encode,
        responseSerialize: output.encode,
        responseDeserialize: output.decode,
      },
    },
    {
      [method.name]: (_call: unknown, callback: grpc.sendUnaryData<MessageShape<O>>) => callback(null, fixed),
    },
  );
  return server;
}

async function listenHttp(handler: Parameters<typeof createServer>[1]): Promise<() => Promise<void>> {
  const server = createServer(handler);
  server.listen(0, "127.0.0.1");
  await new Promise((resolve) => server.once("listening", resolve));
  httpPort = (server.address() as AddressInfo).port;
  return () =>
    new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
}

if (mode === "noop" || mode === "noop-channelz" || mode === "noop-codec") {
  const server = noopGrpc(
    AuthzService.method.checkPermission,
    answer,
    mode === "noop-channelz" ? {} : { "grpc.enable_channelz": 0 },
    mode === "noop-codec",
  );
  port = await bindGrpcServer(server, "127.0.0.1", 0);
  stop = () => new Promise((resolve) => server.tryShutdown(() => resolve()));
} else if (mode === "bridge") {
  const server = createGrpcServer();
  addGrpcService(server, AuthzService, { checkPermission: () => answer }, { logger: silent });
  port = await bindGrpcServer(server, "127.0.0.1", 0);
  stop = () => new Promise((resolve) => server.tryShutdown(() => resolve()));
} else if (mode === "connect-noop") {
  const handler = connectNodeAdapter({
    routes: (router) => router.service(AuthzService, { checkPermission: () => answer }),
  });
  stop = await listenHttp(handler);
} else if (mode === "http-noop") {
  const body = toJsonString(CheckPermissionResponseSchema, answer);
  stop = await listenHttp((request, response) => {
    request.resume();
    request.once("end", () => {
      response.writeHead(200, { "content-type": "application/json" });
      response.end(body);
    });
  });
} else if (mode === "http-200") {
  stop = await listenHttp((_request, response) => {
    response.writeHead(200);
    response.end();
  });
} else if (mode === "ext-authz-noop") {
  const allowed = create(CheckResponseSchema, {
    status: { code: 0 },
    httpResponse: { case: "okResponse", value: {} },
  });
  const server = noopGrpc(Authorization.method.check, allowed, { "grpc.enable_channelz": 0 });
  port = await bindGrpcServer(server, "127.0.0.1", 0);
  stop = () => new Promise((resolve) => server.tryShutdown(() => resolve()));
} else if (mode === "app") {
  const config = loadConfig({
    ...process.env,
    AUTHZ_GRPC_LISTEN: "127.0.0.1:0",
    AUTHZ_HTTP_LISTEN: "127.0.0.1:0",
  });
  const app = await startApp(config, createLogger("error"));
  port = app.grpcPort;
  httpPort = app.httpPort;
  stop = () => app.shutdown();
} else {
  throw new Error(`unknown mode ${mode}`);
}

process.stdout.write(`${JSON.stringify({ port, httpPort })}\n`);
process.once("SIGTERM", () => {
  void stop().then(() => process.exit(0));
});
