// TLS on both listeners of the real app, from AUTHZ_TLS_* files made by openssl: server TLS (clients that
// trust the CA get answers, others fail the handshake) and mutual TLS (a CA-signed client certificate is
// accepted; none, or a self-signed one, is refused at the handshake). Credentials are still required.

import { execFileSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
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

/** A server certificate signed by the test CA that expired on 2020-01-02 (openssl ca can backdate). */
function expiredCertificate(pki: TestPki): { cert: string; key: string } {
  const dir = mkdtempSync(join(tmpdir(), "flip-authz-expired-"));
  const file = (name: string) => join(dir, name);
  writeFileSync(file("index.txt"), "");
  writeFileSync(file("serial"), "01\n");
  writeFileSync(
    file("ca.cnf"),
    [
      "[ca]",
      "default_ca = test",
      "[test]",
      `database = ${file("index.txt")}`,
      `new_certs_dir = ${dir}`,
      `serial = ${file("serial")}`,
      "default_md = sha256",
      "policy = any",
      "copy_extensions = copy",
      "[any]",
      "commonName = supplied",
      "",
    ].join("\n"),
  );
  const openssl = (args: string[]) => execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"] });
  openssl([
    "genpkey",
    "-algorithm",
    "EC",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-out",
    file("expired.key"),
  ]);
  openssl([
    "req",
    "-new",
    "-key",
    file("expired.key"),
    "-subj",
    "/CN=expired.localhost",
    "-addext",
    "subjectAltName=IP:127.0.0.1,DNS:localhost",
    "-out",
    file("expired.csr"),
  ]);
  openssl([
    "ca",
    "-batch",
    "-config",
    file("ca.cnf"),
    "-cert",
    pki.ca.cert,
    "-keyfile",
    pki.ca.key,
    "-in",
    file("expired.csr"),
    "-out",
    file("expired.crt"),
    "-startdate",
    "20200101000000Z",
    "-enddate",
    "20200102000000Z",
    "-notext",
  ]);
  return { cert: file("expired.crt"), key: file("expired.key") };
}

/**
 * ListRoles with the token on both listeners; the outcome code of each. With `refusal`, every failed call's
 * message must match it: a TLS refusal, not merely "nothing is listening" (also UNAVAILABLE on gRPC).
 */
async function listRolesOn(
  t: SecureApp,
  tls: ClientTls | undefined,
  refusal?: RegExp,
): Promise<Record<string, number>> {
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
      if (refusal && outcome.code !== S.OK) expect(outcome.message).toMatch(refusal);
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

  it("logs that TLS is on, with the certificate's subject and expiry, and no warning about it", () => {
    const listening = JSON.parse(t.logs.find((line) => line.includes('"flip-authz listening"')) ?? "{}");
    const leaf = new X509Certificate(pki.read(pki.server.cert));
    expect(listening).toMatchObject({
      tls: "server",
      certificate: { subject: "CN=localhost", validTo: leaf.validToDate.toISOString() },
    });
    expect(t.logs.join("")).not.toContain("TLS certificate");
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

  // With a CA-signed certificate (the usual case) the probe cannot verify the chain; it need not: it dials
  // its own loopback listener and sends nothing secret.
  it("flip-authz healthcheck (the image's HEALTHCHECK) reports SERVING over TLS", async () => {
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
    expect(await listRolesOn(t, stranger, /unable to verify the first certificate/)).toEqual({
      grpc: S.UNAVAILABLE,
      connect: -1,
    });
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

describe("an expired server certificate", () => {
  it("starts (no outage on restart) but warns, and clients refuse the handshake", async () => {
    const expired = expiredCertificate(pki);
    const t = await startSecureApp(db.url, {
      AUTHZ_SERVICE_TOKENS: TOKEN,
      AUTHZ_TLS_CERT_FILE: expired.cert,
      AUTHZ_TLS_KEY_FILE: expired.key,
      AUTHZ_LOG_LEVEL: "info",
    });
    try {
      const warning = t.logs
        .map((line) => JSON.parse(line) as Record<string, unknown>)
        .find((entry) => String(entry.msg).includes("TLS certificate"));
      expect(warning).toMatchObject({
        level: 40,
        msg: "the TLS certificate in AUTHZ_TLS_CERT_FILE is not valid now: clients will refuse the handshake",
        subject: "CN=expired.localhost",
        validTo: "2020-01-02T00:00:00.000Z",
      });
      expect(await listRolesOn(t, { ca: pki.read(pki.ca.cert) }, /certificate has expired/)).toEqual({
        grpc: S.UNAVAILABLE,
        connect: -1,
      });
    } finally {
      await t.close();
    }
  });
});

describe("mutual TLS on both listeners (AUTHZ_TLS_CLIENT_CA_FILE)", () => {
  let t: SecureApp;
  beforeAll(async () => {
    t = await startSecureApp(db.url, {
      AUTHZ_SERVICE_TOKENS: TOKEN,
      // A server certificate that may also authenticate a client: the healthcheck presents it.
      AUTHZ_TLS_CERT_FILE: pki.peer.cert,
      AUTHZ_TLS_KEY_FILE: pki.peer.key,
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

  // Under mutual TLS the probe presents the server's own certificate, so it must allow clientAuth.
  it("flip-authz healthcheck (the image's HEALTHCHECK) reports SERVING under mutual TLS", async () => {
    const result = await runCli(["healthcheck"], {
      DATABASE_URL: db.url,
      AUTHZ_GRPC_LISTEN: t.grpcTarget,
      AUTHZ_HTTP_LISTEN: `127.0.0.1:${t.app.httpPort}`,
      AUTHZ_SERVICE_TOKENS: TOKEN,
      AUTHZ_TLS_CERT_FILE: pki.peer.cert,
      AUTHZ_TLS_KEY_FILE: pki.peer.key,
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
    expect(await listRolesOn(t, tls, /certificate required/)).toEqual({ grpc: S.UNAVAILABLE, connect: -1 });
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
    // The refusal is the handshake's, not a listener that went away: a CA-signed client gets in now.
    const good = {
      ca: pki.read(pki.ca.cert),
      cert: pki.read(pki.client.cert),
      key: pki.read(pki.client.key),
    };
    expect(await listRolesOn(t, good)).toEqual({ grpc: S.OK, connect: S.OK });
  });

  it("still answers a good client after the refused ones", async () => {
    const tls = { ca: pki.read(pki.ca.cert), cert: pki.read(pki.client.cert), key: pki.read(pki.client.key) };
    expect(await listRolesOn(t, tls)).toEqual({ grpc: S.OK, connect: S.OK });
  });
});
