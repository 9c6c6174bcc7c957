// A client of our own gRPC health service, for `flip-authz healthcheck` (images without a shell or curl).

import { readFileSync } from "node:fs";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  HealthCheckRequestSchema,
  HealthCheckResponse_ServingStatus,
  HealthCheckResponseSchema,
} from "../../gen/grpc/health/v1/health_pb.ts";
import type { Config } from "../config.ts";

/** The address a local client dials for a listener: a wildcard bind is reached on loopback. */
export function localTarget(host: string, port: number): string {
  const dial = host === "0.0.0.0" ? "127.0.0.1" : host === "::" ? "::1" : host;
  return dial.includes(":") ? `[${dial}]:${port}` : `${dial}:${port}`;
}

/** Resolves "SERVING", "NOT_SERVING", … or rejects with a one-line reason. */
export function probeHealth(config: Config, timeoutMs = 3000): Promise<string> {
  const target = localTarget(config.grpcListen.host, config.grpcListen.port);
  let credentials = grpc.credentials.createInsecure();
  if (config.tls) {
    // We dial our own listener, so its own certificate is the root we trust. Under mutual TLS the
    // handshake needs a client certificate this probe does not have: probe /readyz there instead.
    credentials = grpc.credentials.createSsl(readFileSync(config.tls.certFile), null, null, {
      checkServerIdentity: () => undefined,
    });
  }
  const client = new grpc.Client(target, credentials);
  return new Promise<string>((resolve, reject) => {
    client.makeUnaryRequest(
      "/grpc.health.v1.Health/Check",
      (message: Uint8Array) => Buffer.from(toBinary(HealthCheckRequestSchema, message as never)),
      (bytes: Buffer) => fromBinary(HealthCheckResponseSchema, bytes),
      create(HealthCheckRequestSchema, { service: "" }) as unknown as Uint8Array,
      { deadline: Date.now() + timeoutMs },
      (error, response) => {
        client.close();
        if (error || !response) reject(new Error(`${target}: ${error?.details || "no answer"}`));
        else {
          const name = Object.entries(HealthCheckResponse_ServingStatus).find(
            ([, v]) => v === response.status,
          )?.[0];
          resolve(name ?? String(response.status));
        }
      },
    );
  });
}
