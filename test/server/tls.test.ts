// Both listeners over TLS with credentials from the caller: grpc-js with ServerCredentials, the HTTP
// listener as HTTPS; a client that trusts the test CA gets answers, health included.

import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthzService } from "../../gen/flip/authz/v1/authz_pb.ts";
import { Health } from "../../gen/grpc/health/v1/health_pb.ts";
import { createHealthState } from "../../src/server/health.ts";
import { type RunningServers, startServers } from "../../src/server/listen.ts";
import { createTestPki, type TestPki } from "../helpers/certs.ts";
import { createLogger, createProbe, createTestService, unary } from "./fixture.ts";

describe("TLS on both listeners", () => {
  let pki: TestPki;
  let servers: RunningServers;
  beforeAll(async () => {
    pki = createTestPki();
    const cert = pki.read(pki.server.cert);
    const key = pki.read(pki.server.key);
    const health = createHealthState([AuthzService.typeName]);
    health.setAll("SERVING");
    servers = await startServers({
      service: AuthzService,
      impl: createTestService(createProbe()),
      health,
      logger: createLogger([]),
      grpc: {
        host: "127.0.0.1",
        port: 0,
        credentials: grpc.ServerCredentials.createSsl(null, [{ private_key: key, cert_chain: cert }], false),
      },
      http: { host: "127.0.0.1", port: 0, tls: { cert, key } },
    });
  });
  afterAll(async () => {
    await servers.shutdown(1000);
  });

  it("serves gRPC over TLS", async () => {
    const client = new grpc.Client(
      `127.0.0.1:${servers.grpcPort}`,
      grpc.credentials.createSsl(pki.read(pki.ca.cert)),
    );
    try {
      expect((await unary(client, AuthzService.method.listRoles, {})).roles).toHaveLength(1);
      expect((await unary(client, Health.method.check, { service: "" })).status).toBe(1);
    } finally {
      client.close();
    }
  });

  it("serves Connect over HTTPS", async () => {
    const transport = createConnectTransport({
      baseUrl: `https://127.0.0.1:${servers.httpPort}`,
      httpVersion: "1.1",
      nodeOptions: { ca: pki.read(pki.ca.cert) },
    });
    const client = createClient(AuthzService, transport);
    expect((await client.listRoles({})).roles[0]?.name).toBe("Admin");
  });
});
