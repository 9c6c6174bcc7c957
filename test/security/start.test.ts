// Refused starts of the real app: open mode on a non-loopback address, unusable credentials or TLS files,
// a listener that cannot bind. Each refusal is one line naming the variable, carries no secret, and leaves
// nothing listening (both ports bind again afterwards). Open mode logs its warning at start.

import { randomUUID } from "node:crypto";
import { existsSync, mkdtempSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { AuthzService } from "../../gen/flip/authz/v1/authz_pb.ts";
import { startApp } from "../../src/app.ts";
import { NIL_UUID } from "../../src/authz/ids.ts";
import { ConfigError, type Env, loadConfig } from "../../src/config.ts";
import { createLogger } from "../../src/logger.ts";
import { createSqliteDatabase } from "../helpers/app.ts";
import { createTestPki, type TestPki } from "../helpers/certs.ts";
import { ISSUER, writeTempFile } from "../helpers/keys.ts";
import { freePort } from "../helpers/ports.ts";
import { createConnectClient, createGrpcClient, S, startSecureApp } from "../helpers/secure-app.ts";

const m = AuthzService.method;

function listen(port: number, host: string): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(port, host, () => resolve(server));
  });
}

const close = (server: Server) => new Promise<void>((resolve) => server.close(() => resolve()));

/** True when `port` can be bound again on `host` (nothing is left listening there). */
async function isFree(port: number, host: string): Promise<boolean> {
  try {
    await close(await listen(port, host));
    return true;
  } catch {
    return false;
  }
}

let pki: TestPki;
beforeAll(() => {
  pki = createTestPki();
});

/**
 * Starts the app on fresh fixed ports with `env` and expects the start to fail with `message` (a ConfigError
 * when `configError`); checks the message is one line, that both ports are free afterwards and that the
 * SQLite file was never created (the refusal came before anything was opened) when `beforeOpen`.
 */
async function expectRefusedStart(
  env: Env,
  message: string | RegExp,
  options: { host?: string; beforeOpen?: boolean; secrets?: string[] } = {},
): Promise<string> {
  const host = options.host ?? "127.0.0.1";
  const grpcPort = await freePort(host);
  const httpPort = await freePort(host);
  const dir = mkdtempSync(join(tmpdir(), "authz-start-"));
  const dbPath = join(dir, "authz.db");
  const logs: string[] = [];
  const config = loadConfig({
    DATABASE_URL: `sqlite:${dbPath}`,
    AUTHZ_GRPC_LISTEN: `${host}:${grpcPort}`,
    AUTHZ_HTTP_LISTEN: `${host}:${httpPort}`,
    ...env,
  });
  let error: unknown;
  try {
    const app = await startApp(
      config,
      createLogger("trace", { write: (line: string) => void logs.push(line) }),
    );
    await app.shutdown();
  } catch (caught) {
    error = caught;
  }
  expect(error).toBeInstanceOf(Error);
  const text = (error as Error).message;
  expect(text).toMatch(message);
  expect(text).not.toContain("\n");
  for (const secret of options.secrets ?? []) {
    expect(text).not.toContain(secret);
    expect(logs.join("")).not.toContain(secret);
  }
  expect(await isFree(grpcPort, host)).toBe(true);
  expect(await isFree(httpPort, host)).toBe(true);
  if (options.beforeOpen ?? true) {
    expect(error).toBeInstanceOf(ConfigError);
    expect(existsSync(dbPath)).toBe(false);
  }
  return text;
}

describe("open mode", () => {
  it("on 0.0.0.0 is refused, naming what to set", async () => {
    for (const exposed of ["AUTHZ_GRPC_LISTEN", "AUTHZ_HTTP_LISTEN"]) {
      const grpcPort = await freePort("0.0.0.0");
      const text = await expectRefusedStart(
        { [exposed]: `0.0.0.0:${grpcPort}` },
        new RegExp(
          `^AUTHZ_SERVICE_TOKENS or AUTHZ_JWT_ISSUER: listening on 0\\.0\\.0\\.0:${grpcPort} needs credentials \\(or AUTHZ_ALLOW_UNAUTHENTICATED=true\\)$`,
        ),
      );
      expect(
        await expectRefusedStart(
          { [exposed]: `0.0.0.0:${grpcPort}`, AUTHZ_ALLOW_UNAUTHENTICATED: "false" },
          text,
        ),
      ).toBe(text);
      expect(await isFree(grpcPort, "0.0.0.0")).toBe(true);
    }
  });

  it("on 0.0.0.0 starts with AUTHZ_ALLOW_UNAUTHENTICATED=true, warns, and lets every call through as the nil UUID", async () => {
    const db = await createSqliteDatabase();
    const t = await startSecureApp(db.url, {
      AUTHZ_GRPC_LISTEN: "0.0.0.0:0",
      AUTHZ_ALLOW_UNAUTHENTICATED: "true",
      AUTHZ_LOG_LEVEL: "info",
    });
    try {
      const warning = t.logs
        .map((line) => JSON.parse(line) as { level: number; msg: string })
        .find((entry) => entry.msg.startsWith("authentication is OFF"));
      expect(warning?.level).toBe(40);
      expect(warning?.msg).toMatch(
        /^authentication is OFF \(open mode, exposed on 0\.0\.0\.0:\d+\): every call is allowed/,
      );
      const user = randomUUID();
      for (const client of [createGrpcClient(t.grpcTarget), createConnectClient(t.httpBase)]) {
        const outcome = await client.unary(m.assignRole, { userId: user, role: "Viewer" });
        expect(outcome.code).toBe(S.OK);
        // Whatever it sends: a bogus credential is not even looked at in open mode.
        const anyone = await client.unary(
          m.listAuditEvents,
          { userId: user },
          { authorization: "Bearer nonsense" },
        );
        client.close();
        expect(anyone.code).toBe(S.OK);
      }
      expect(
        await db.sql("SELECT action, modified_by_user_id FROM users_audit WHERE user_id = ?", [user]),
      ).toEqual([{ action: "Assigned role Viewer", modified_by_user_id: NIL_UUID }]);
    } finally {
      await t.close();
      await db.close();
    }
  });

  it("on loopback starts and logs the warning at start", async () => {
    const db = await createSqliteDatabase();
    const t = await startSecureApp(db.url, { AUTHZ_LOG_LEVEL: "warn" });
    try {
      const entries = t.logs.map((line) => JSON.parse(line) as { level: number; msg: string });
      expect(entries[0]).toMatchObject({
        level: 40,
        msg: "authentication is OFF (open mode, loopback only): every call is allowed; set AUTHZ_SERVICE_TOKENS or AUTHZ_JWT_ISSUER",
      });
    } finally {
      await t.close();
      await db.close();
    }
  });

  it("is not announced when credentials are configured", async () => {
    const db = await createSqliteDatabase();
    const t = await startSecureApp(db.url, {
      AUTHZ_GRPC_LISTEN: "0.0.0.0:0",
      AUTHZ_SERVICE_TOKENS: "exposed-service-token-0123",
      AUTHZ_LOG_LEVEL: "info",
    });
    try {
      expect(t.logs.join("")).not.toContain("authentication is OFF");
      expect(t.logs.join("")).not.toContain("exposed-service-token-0123");
    } finally {
      await t.close();
      await db.close();
    }
  });
});

describe("credentials that stop the start", () => {
  it("an unreadable or unusable AUTHZ_JWKS_FILE", async () => {
    const jwt = { AUTHZ_JWT_ISSUER: ISSUER };
    await expectRefusedStart(
      { ...jwt, AUTHZ_JWKS_FILE: "/nonexistent/jwks.json" },
      /^AUTHZ_JWKS_FILE: cannot read \/nonexistent\/jwks\.json \(ENOENT\)$/,
    );
    const dir = mkdtempSync(join(tmpdir(), "authz-jwks-dir-"));
    await expectRefusedStart(
      { ...jwt, AUTHZ_JWKS_FILE: dir },
      /^AUTHZ_JWKS_FILE: cannot read .* \(EISDIR\)$/,
    );
    const notJson = writeTempFile("jwks.json", "{ not json");
    await expectRefusedStart({ ...jwt, AUTHZ_JWKS_FILE: notJson }, /^AUTHZ_JWKS_FILE: .* is not JSON$/);
    const noKeys = writeTempFile("jwks.json", { keys: [{ kty: "oct", k: "c2VjcmV0" }] });
    await expectRefusedStart(
      { ...jwt, AUTHZ_JWKS_FILE: noKeys },
      /^AUTHZ_JWKS_FILE: .*: no usable signing keys/,
    );
  });

  it("a short service token is refused by position, never echoed", () => {
    const short = "short-tok3n";
    const env = {
      AUTHZ_SERVICE_TOKENS: `long-enough-service-token-1,${short}`,
      AUTHZ_GRPC_LISTEN: "127.0.0.1:0",
      AUTHZ_HTTP_LISTEN: "127.0.0.1:0",
    };
    let error: unknown;
    try {
      loadConfig(env);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).toBe("AUTHZ_SERVICE_TOKENS: token #2 is shorter than 16 characters");
    expect((error as Error).message).not.toContain(short);
  });

  it("a service token no header could carry (spaces, non-ASCII) stops the start, by position", async () => {
    for (const bad of ["our service token 2026", "service-tokén-0123456789"]) {
      await expectRefusedStart(
        { AUTHZ_SERVICE_TOKENS: `long-enough-service-token-1,${bad}` },
        /^AUTHZ_SERVICE_TOKENS: token #2 has spaces or characters outside visible ASCII, so no caller can send it$/,
        { secrets: [bad] },
      );
    }
  });

  it("a missing TLS file, naming the variable", async () => {
    const tls = { AUTHZ_SERVICE_TOKENS: "tls-service-token-0123456789" };
    await expectRefusedStart(
      { ...tls, AUTHZ_TLS_CERT_FILE: join(pki.dir, "missing.crt"), AUTHZ_TLS_KEY_FILE: pki.server.key },
      /^AUTHZ_TLS_CERT_FILE: cannot read .*missing\.crt \(ENOENT\)$/,
    );
    await expectRefusedStart(
      { ...tls, AUTHZ_TLS_CERT_FILE: pki.server.cert, AUTHZ_TLS_KEY_FILE: join(pki.dir, "missing.key") },
      /^AUTHZ_TLS_KEY_FILE: cannot read .*missing\.key \(ENOENT\)$/,
    );
    await expectRefusedStart(
      {
        ...tls,
        AUTHZ_TLS_CERT_FILE: pki.server.cert,
        AUTHZ_TLS_KEY_FILE: pki.server.key,
        AUTHZ_TLS_CLIENT_CA_FILE: join(pki.dir, "missing-ca.crt"),
      },
      /^AUTHZ_TLS_CLIENT_CA_FILE: cannot read .*missing-ca\.crt \(ENOENT\)$/,
    );
    // A key where the certificate belongs.
    await expectRefusedStart(
      { ...tls, AUTHZ_TLS_CERT_FILE: pki.server.key, AUTHZ_TLS_KEY_FILE: pki.server.key },
      /^AUTHZ_TLS_CERT_FILE: .* holds no PEM certificate$/,
    );
  });

  it("a key that does not match the certificate, without echoing the key", async () => {
    const key = pki.read(pki.client.key).toString();
    const body = key.split("\n")[1] ?? "";
    expect(body.length).toBeGreaterThan(16);
    await expectRefusedStart(
      {
        AUTHZ_SERVICE_TOKENS: "tls-service-token-0123456789",
        AUTHZ_TLS_CERT_FILE: pki.server.cert,
        AUTHZ_TLS_KEY_FILE: pki.client.key,
      },
      /^AUTHZ_TLS_KEY_FILE: .*client\.key does not match the certificate in AUTHZ_TLS_CERT_FILE$/,
      { secrets: [body] },
    );
  });
});

describe("a listener that cannot bind", () => {
  it("the HTTP port taken: the start fails, the gRPC port is released and the database closed", async () => {
    const taken = await listen(0, "127.0.0.1");
    const httpPort = (taken.address() as { port: number }).port;
    const grpcPort = await freePort();
    const db = await createSqliteDatabase();
    try {
      const config = loadConfig({
        DATABASE_URL: db.url,
        AUTHZ_GRPC_LISTEN: `127.0.0.1:${grpcPort}`,
        AUTHZ_HTTP_LISTEN: `127.0.0.1:${httpPort}`,
        AUTHZ_SERVICE_TOKENS: "bind-service-token-0123456789",
      });
      await expect(startApp(config, createLogger("silent"))).rejects.toThrow(/EADDRINUSE/);
      expect(await isFree(grpcPort, "127.0.0.1")).toBe(true);
      // The database was closed: a second start on the same file and free ports works.
      const t = await startSecureApp(db.url, { AUTHZ_SERVICE_TOKENS: "bind-service-token-0123456789" });
      await t.close();
    } finally {
      await close(taken);
      await db.close();
    }
  });

  it("the gRPC port taken: the start fails and the HTTP port stays free", async () => {
    const taken = await listen(0, "127.0.0.1");
    const grpcPort = (taken.address() as { port: number }).port;
    const httpPort = await freePort();
    const db = await createSqliteDatabase();
    try {
      const config = loadConfig({
        DATABASE_URL: db.url,
        AUTHZ_GRPC_LISTEN: `127.0.0.1:${grpcPort}`,
        AUTHZ_HTTP_LISTEN: `127.0.0.1:${httpPort}`,
        AUTHZ_SERVICE_TOKENS: "bind-service-token-0123456789",
      });
      const error = await startApp(config, createLogger("silent")).then(
        () => undefined,
        (caught: unknown) => caught as Error,
      );
      expect(error?.message).toMatch(/EADDRINUSE|No address added/);
      expect(await isFree(httpPort, "127.0.0.1")).toBe(true);
    } finally {
      await close(taken);
      await db.close();
    }
  });
});
