// TLS on both listeners of the real app, from AUTHZ_TLS_* files made by openssl: server TLS (clients that
// trust the CA get answers, others fail the handshake) and mutual TLS (a CA-signed client certificate is
// accepted; none, or a self-signed one, is refused at the handshake). Credentials are still required.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthzService } from "../../gen/flip/authz/v1/authz_pb.ts";
import { Health } from "../../gen/grpc/health/v1/health_pb.ts";
import { type AppDatabase, createSqliteDatabase } from "../helpers/app.ts";
import { createTestPki, type TestPki } from "../helpers/certs.ts";
import { runCli } from "../helpers/cli.ts";
import {
  type ClientTls,
  createConnectClient,
  createGrpcClient,
  type ListenerClient,
  rawRequest,
  S,
  type SecureApp,
  startSecureApp,
} from "../helpers/secure-app.ts";

const m = AuthzService.method;
const TOKEN = "tls-service-token-0123456789";
const auth = { authorization: `Bearer ${TOKEN}` };

let pki: TestPki;
let db: AppDatabase;
beforeAll(async () => {
  pki = createTestPki();
  db = await createSqliteDatabase();
});
afterAll(async () => {
  await db?.close();
});

/** ListRoles with the token on both listeners; the outcome code of each. */
async function listRolesOn(t: SecureApp, tls: ClientTls | undefined): Promise<Record<string, number>> {
  const clients: ListenerClient[] = [
    createGrpcClient(t.grpcTarget, tls),
    createConnectClient(t.httpBase, tls),
  ];
  const codes: Record<string, number> = {};
  try {
    for (const client of clients) {
      const outcome = await client.unary(m.listRoles, {}, { ...auth, timeoutMs: 5000 }).catch(
        // The Connect client rejects when the HTTPS handshake fails.
        (error: Error) => ({ code: -1, message: error.message }),
      );
      codes[client.name] = outcome.code;
    }
  } finally {
    for (const client of clients) client.close();
  }
  return codes;
}

describe("server TLS on both listeners", () => {
  let t: SecureApp;
  beforeAll(async () => {
    t = await startSecureApp(db.url, {
      AUTHZ_SERVICE_TOKENS: TOKEN,
      AUTHZ_TLS_CERT_FILE: pki.server.cert,
      AUTHZ_TLS_KEY_FILE: pki.server.key,
      AUTHZ_LOG_LEVEL: "info",
    });
  });
  afterAll(async () => {
    await t?.close();
  });

  it("logs that TLS is on", () => {
    expect(t.logs.find((line) => line.includes('"flip-authz listening"'))).toContain('"tls":"server"');
    expect(t.httpBase).toMatch(/^https:/);
  });

  it("answers clients that trust the CA, with the credential still required", async () => {
    const tls = { ca: pki.read(pki.ca.cert) };
    expect(await listRolesOn(t, tls)).toEqual({ grpc: S.OK, connect: S.OK });
    for (const client of [createGrpcClient(t.grpcTarget, tls), createConnectClient(t.httpBase, tls)]) {
      const outcome = await client.unary(m.listRoles, {});
      client.close();
      expect({ code: outcome.code, message: outcome.message }).toEqual({
        code: S.UNAUTHENTICATED,
        message: "missing credentials",
      });
    }
    const grpc = createGrpcClient(t.grpcTarget, tls);
    try {
      expect((await grpc.unary(Health.method.check, { service: "" })).body).toEqual({ status: "SERVING" });
    } finally {
      grpc.close();
    }
    const healthz = await rawRequest(`${t.httpBase}/healthz`, { tls });
    expect(healthz.status).toBe(200);
  });

  // KNOWN BUG (src/server/health-probe.ts): the probe trusts AUTHZ_TLS_CERT_FILE as its only root, which
  // verifies only a self-signed certificate; with a CA-signed one (the usual case) the handshake fails with
  // "unable to verify the first certificate" and the container is reported unhealthy. it.fails flips when fixed.
  it.fails("flip-authz healthcheck (the image's HEALTHCHECK) reports SERVING over TLS", async () => {
    const result = await runCli(["healthcheck"], {
      DATABASE_URL: db.url,
      AUTHZ_GRPC_LISTEN: t.grpcTarget,
      AUTHZ_HTTP_LISTEN: `127.0.0.1:${t.app.httpPort}`,
      AUTHZ_SERVICE_TOKENS: TOKEN,
      AUTHZ_TLS_CERT_FILE: pki.server.cert,
      AUTHZ_TLS_KEY_FILE: pki.server.key,
    });
    expect({ code: result.code, stdout: result.stdout.trim(), stderr: result.stderr.trim() }).toEqual({
      code: 0,
      stdout: "SERVING",
      stderr: "",
    });
  });

  it("fails the handshake for clients that do not trust the CA, and for plaintext gRPC", async () => {
    const stranger = { ca: pki.read(pki.selfSigned.cert) };
    expect(await listRolesOn(t, stranger)).toEqual({ grpc: S.UNAVAILABLE, connect: -1 });
    await expect(rawRequest(`${t.httpBase}/healthz`, { tls: stranger })).rejects.toThrow(/certificate/);
    const plaintext = createGrpcClient(t.grpcTarget);
    try {
      expect((await plaintext.unary(m.listRoles, {}, { ...auth, timeoutMs: 5000 })).code).toBe(S.UNAVAILABLE);
    } finally {
      plaintext.close();
    }
    await expect(rawRequest(`${t.httpBase.replace("https:", "http:")}/healthz`, {})).rejects.toThrow();
  });
});

describe("mutual TLS on both listeners (AUTHZ_TLS_CLIENT_CA_FILE)", () => {
  let t: SecureApp;
  beforeAll(async () => {
    t = await startSecureApp(db.url, {
      AUTHZ_SERVICE_TOKENS: TOKEN,
      AUTHZ_TLS_CERT_FILE: pki.server.cert,
      AUTHZ_TLS_KEY_FILE: pki.server.key,
      AUTHZ_TLS_CLIENT_CA_FILE: pki.ca.cert,
      AUTHZ_LOG_LEVEL: "info",
    });
  });
  afterAll(async () => {
    await t?.close();
  });

  it("logs mutual TLS", () => {
    expect(t.logs.find((line) => line.includes('"flip-authz listening"'))).toContain('"tls":"mutual"');
  });

  it("accepts a client certificate the CA signed, on both listeners and for health", async () => {
    const tls = { ca: pki.read(pki.ca.cert), cert: pki.read(pki.client.cert), key: pki.read(pki.client.key) };
    expect(await listRolesOn(t, tls)).toEqual({ grpc: S.OK, connect: S.OK });
    expect((await rawRequest(`${t.httpBase}/readyz`, { tls })).status).toBe(200);
    const grpc = createGrpcClient(t.grpcTarget, tls);
    try {
      expect((await grpc.unary(Health.method.check, { service: "" })).body).toEqual({ status: "SERVING" });
      // The certificate authenticates the transport, not the caller: the credential is still required.
      const outcome = await grpc.unary(m.getProfile, { userId: "7d1e4c0a-5b2f-4c8e-9a3d-1f2e3d4c5b6a" });
      expect({ code: outcome.code, message: outcome.message }).toEqual({
        code: S.UNAUTHENTICATED,
        message: "missing credentials",
      });
    } finally {
      grpc.close();
    }
  });

  // KNOWN BUG (src/server/health-probe.ts): under mutual TLS the probe has no client certificate, so it can
  // never pass (and /readyz, which its comment suggests, sits behind the same mutual TLS). it.fails flips when fixed.
  it.fails("flip-authz healthcheck (the image's HEALTHCHECK) reports SERVING under mutual TLS", async () => {
    const result = await runCli(["healthcheck"], {
      DATABASE_URL: db.url,
      AUTHZ_GRPC_LISTEN: t.grpcTarget,
      AUTHZ_HTTP_LISTEN: `127.0.0.1:${t.app.httpPort}`,
      AUTHZ_SERVICE_TOKENS: TOKEN,
      AUTHZ_TLS_CERT_FILE: pki.server.cert,
      AUTHZ_TLS_KEY_FILE: pki.server.key,
      AUTHZ_TLS_CLIENT_CA_FILE: pki.ca.cert,
    });
    expect({ code: result.code, stdout: result.stdout.trim(), stderr: result.stderr.trim() }).toEqual({
      code: 0,
      stdout: "SERVING",
      stderr: "",
    });
  });

  it("refuses a client without a certificate at the handshake", async () => {
    const tls = { ca: pki.read(pki.ca.cert) };
    expect(await listRolesOn(t, tls)).toEqual({ grpc: S.UNAVAILABLE, connect: -1 });
    await expect(rawRequest(`${t.httpBase}/healthz`, { tls })).rejects.toThrow();
  });

  it("refuses a self-signed client certificate at the handshake", async () => {
    const tls = {
      ca: pki.read(pki.ca.cert),
      cert: pki.read(pki.selfSigned.cert),
      key: pki.read(pki.selfSigned.key),
    };
    expect(await listRolesOn(t, tls)).toEqual({ grpc: S.UNAVAILABLE, connect: -1 });
    await expect(rawRequest(`${t.httpBase}/healthz`, { tls })).rejects.toThrow();
  });

  it("still answers a good client after the refused ones", async () => {
    const tls = { ca: pki.read(pki.ca.cert), cert: pki.read(pki.client.cert), key: pki.read(pki.client.key) };
    expect(await listRolesOn(t, tls)).toEqual({ grpc: S.OK, connect: S.OK });
  });
});
