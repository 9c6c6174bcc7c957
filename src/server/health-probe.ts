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
    // We dial our own listener on this machine and send nothing secret, so the server's certificate is
    // not verified (a CA-signed one could not be, without the CA). Under mutual TLS the probe presents the
    // server's own certificate, which must then also allow client authentication (README, "Security").
    const identity = config.tls.clientCaFile
      ? { key: readFileSync(config.tls.keyFile), cert: readFileSync(config.tls.certFile) }
      : { key: null, cert: null };
    credentials = grpc.credentials.createSsl(null, identity.key, identity.cert, {
      rejectUnauthorized: false,
    });
  }
  // An IP address is no TLS server name (RFC 6066; Node warns): name ourselves, unverified anyway.
  const options = config.tls ? { "grpc.ssl_target_name_override": "localhost" } : {};
  const client = new grpc.Client(target, credentials, options);
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
