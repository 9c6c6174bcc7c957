// The HTTP listener against browser-borne attacks, through real sockets: DNS rebinding (a foreign Host) is
// refused in open mode before anything runs, a web page's Origin may not change state whatever its
// credentials, CORS headers go only to listed origins, and probes, metrics scrapes by pod IP and every
// ordinary client (curl, buf curl, the suite's clients: Host = the address they dialled) keep working.

import { create, toBinary } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthzService, CheckPermissionRequestSchema } from "../../gen/flip/authz/v1/authz_pb.ts";
import { type AppDatabase, createSqliteDatabase } from "../helpers/app.ts";
import { CLIENT_ID, ISSUER, signAccessToken } from "../helpers/keys.ts";
import {
  createConnectClient,
  createTestPool,
  type RawResponse,
  rawRequest,
  S,
  type SecureApp,
  startSecureApp,
} from "../helpers/secure-app.ts";

const USER = "0b8e2f4e-6a3c-4f43-9b1e-3f7f1b2c9d10";
const ADMIN = "7d3f1c2b-9a8e-4b6c-8d5e-1f2a3b4c5d6e";
const TOKEN = "browser-test-service-token-0123456789";
const ASSIGN = "/flip.authz.v1.AuthzService/AssignRole";
const LIST_ROLES = "/flip.authz.v1.AuthzService/ListRoles";

function post(
  app: SecureApp,
  path: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<RawResponse> {
  return rawRequest(`${app.httpBase}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
}

const json = (response: RawResponse) => JSON.parse(response.body.toString("utf8")) as unknown;
const assign = { userId: USER, role: "Admin" };

async function writes(db: AppDatabase): Promise<{ roles: number; audits: number }> {
  const [roles] = await db.sql("SELECT count(*) AS n FROM user_role WHERE user_id = ?", [USER]);
  const [audits] = await db.sql("SELECT count(*) AS n FROM users_audit WHERE user_id = ?", [USER]);
  return { roles: Number(roles?.n), audits: Number(audits?.n) };
}

describe("open mode on loopback (npm start's defaults)", () => {
  let db: AppDatabase;
  let app: SecureApp;
  let port: number;
  beforeAll(async () => {
    db = await createSqliteDatabase();
    app = await startSecureApp(db.url, { AUTHZ_LOG_LEVEL: "debug" });
    port = app.app.httpPort;
  });
  afterAll(async () => {
    await app?.close();
    await db?.close();
  });

  it("refuses the rebinding attack (a foreign Host and Origin) with 421, writes nothing and logs it at debug", async () => {
    const response = await post(app, ASSIGN, assign, {
      host: "evil.example.com",
      origin: "http://evil.example.com",
    });
    expect(response.status).toBe(421);
    expect(response.body.toString()).toBe(
      'misdirected request: this service does not answer to the host "evil.example.com" (AUTHZ_ALLOWED_HOSTS lists the names it answers to)\n',
    );
    expect(response.headers["access-control-allow-origin"]).toBeUndefined();
    expect(await writes(db)).toEqual({ roles: 0, audits: 0 });
    const line = app.logs.map((l) => JSON.parse(l)).find((l) => l.msg === "refused a request: host");
    expect(line).toMatchObject({ level: 20, host: "evil.example.com", path: ASSIGN });
  });

  it("refuses a foreign Host on every path but the probes: reads, gRPC-Web, metrics, unknown paths", async () => {
    const host = { host: `evil.example.com:${port}` };
    expect((await post(app, LIST_ROLES, {}, host)).status).toBe(421);
    const grpcWeb = await rawRequest(`${app.httpBase}/flip.authz.v1.AuthzService/CheckPermission`, {
      method: "POST",
      headers: { ...host, "content-type": "application/grpc-web+proto" },
      body: Buffer.concat([
        Buffer.from([0, 0, 0, 0, 0]),
        toBinary(CheckPermissionRequestSchema, create(CheckPermissionRequestSchema, {})),
      ]),
    });
    expect(grpcWeb.status).toBe(421);
    expect((await rawRequest(`${app.httpBase}/metrics`, { headers: host })).status).toBe(421);
    expect((await rawRequest(`${app.httpBase}/nowhere`, { headers: host })).status).toBe(421);
    const preflight = await rawRequest(`${app.httpBase}${ASSIGN}`, {
      method: "OPTIONS",
      headers: { ...host, origin: "http://evil.example.com", "access-control-request-method": "POST" },
    });
    expect(preflight.status).toBe(421);
  });

  it("serves Kubernetes-style probes whatever the Host (they reveal nothing and change nothing)", async () => {
    const host = { host: "10.12.13.14:8080" };
    const healthz = await rawRequest(`${app.httpBase}/healthz`, { headers: host });
    expect([healthz.status, healthz.body.toString()]).toEqual([200, "ok\n"]);
    const readyz = await rawRequest(`${app.httpBase}/readyz`, { method: "HEAD", headers: host });
    expect(readyz.status).toBe(200);
  });

  it("serves the same call with Host 127.0.0.1:<port>, localhost:<port> and [::1]:<port>", async () => {
    const served = await post(app, ASSIGN, assign, { host: `127.0.0.1:${port}` });
    expect(served.status).toBe(200);
    expect(json(served)).toMatchObject({ changed: true, roles: ["Admin"] });
    expect(await writes(db)).toEqual({ roles: 1, audits: 1 });
    for (const host of [`localhost:${port}`, `[::1]:${port}`, `LocalHost:${port}`]) {
      const read = await post(app, LIST_ROLES, {}, { host });
      expect(read.status, host).toBe(200);
    }
    expect((await post(app, LIST_ROLES, {}, { host: "localhost:3000" })).status).toBe(421);
    expect(
      (await rawRequest(`${app.httpBase}/metrics`, { headers: { host: `localhost:${port}` } })).status,
    ).toBe(200);
  });

  it("refuses a write from a foreign web Origin on an allowed Host (403), and lets its own origin write", async () => {
    const revoke = { userId: USER, role: "Researcher" };
    const foreign = await post(app, "/flip.authz.v1.AuthzService/AssignRole", revoke, {
      origin: "http://evil.example.com",
    });
    expect(foreign.status).toBe(403);
    expect(json(foreign)).toEqual({
      code: "permission_denied",
      message:
        'a call from the web origin "http://evil.example.com" may not change anything here (AUTHZ_ALLOWED_HOSTS, AUTHZ_CORS_ORIGINS)',
    });
    expect(foreign.headers["access-control-allow-origin"]).toBeUndefined();
    expect(await writes(db)).toEqual({ roles: 1, audits: 1 });
    const own = await post(app, "/flip.authz.v1.AuthzService/AssignRole", revoke, {
      origin: `http://127.0.0.1:${port}`,
    });
    expect(own.status).toBe(200);
    expect(await writes(db)).toEqual({ roles: 2, audits: 2 });
  });

  it("lets a foreign Origin read (the browser keeps the answer from it: no CORS headers are sent)", async () => {
    const read = await post(app, LIST_ROLES, {}, { origin: "http://evil.example.com" });
    expect(read.status).toBe(200);
    expect(Object.keys(read.headers).filter((h) => h.startsWith("access-control-"))).toEqual([]);
    const preflight = await rawRequest(`${app.httpBase}${LIST_ROLES}`, {
      method: "OPTIONS",
      headers: { origin: "http://evil.example.com", "access-control-request-method": "POST" },
    });
    expect(preflight.status).toBe(403);
    expect(Object.keys(preflight.headers).filter((h) => h.startsWith("access-control-"))).toEqual([]);
  });

  it("keeps the suite's own Connect client working unchanged", async () => {
    const client = createConnectClient(app.httpBase);
    const outcome = await client.unary(AuthzService.method.checkPermission, {
      userId: USER,
      permission: "CAN_MANAGE_USERS",
    });
    expect(outcome).toMatchObject({ code: S.OK, body: { allowed: true, grantedBy: ["Admin"] } });
  });
});

describe("open mode with AUTHZ_ALLOWED_HOSTS (a wildcard)", () => {
  let db: AppDatabase;
  let app: SecureApp;
  beforeAll(async () => {
    db = await createSqliteDatabase();
    app = await startSecureApp(db.url, { AUTHZ_ALLOWED_HOSTS: "*.example.org, flip-authz" });
  });
  afterAll(async () => {
    await app?.close();
    await db?.close();
  });

  it.each([
    ["authz.example.org", 200],
    ["a.b.example.org:443", 200],
    ["flip-authz:8080", 200],
    ["example.org", 421],
    ["evil-example.org", 421],
    ["example.org.evil.com", 421],
    ["flip-authz.evil.com", 421],
  ])("Host %s → %i", async (host, status) => {
    expect((await post(app, LIST_ROLES, {}, { host })).status).toBe(status);
  });

  it("lets a page on a listed name write, as its own origin", async () => {
    const response = await post(app, ASSIGN, assign, {
      host: "authz.example.org",
      origin: "https://authz.example.org",
    });
    expect(response.status).toBe(200);
  });
});

describe("with credentials", () => {
  let db: AppDatabase;
  let open: SecureApp;
  let listed: SecureApp;
  let adminToken: string;

  beforeAll(async () => {
    db = await createSqliteDatabase();
    const pool = await createTestPool();
    const env = {
      AUTHZ_SERVICE_TOKENS: TOKEN,
      AUTHZ_JWT_ISSUER: ISSUER,
      AUTHZ_JWT_AUDIENCE: CLIENT_ID,
      AUTHZ_JWKS_FILE: pool.jwksFile,
    };
    open = await startSecureApp(db.url, env);
    listed = await startSecureApp(db.url, {
      ...env,
      AUTHZ_ALLOWED_HOSTS: "flip-authz",
      AUTHZ_CORS_ORIGINS: "https://console.example.org",
    });
    await db.sql(
      "INSERT INTO user_role (user_id, role_id) VALUES (?, '64d3145b-034c-4328-b637-8eb54313b7c5')",
      [ADMIN],
    );
    adminToken = `Bearer ${await signAccessToken(pool.rsa, ADMIN)}`;
  });
  afterAll(async () => {
    await open?.close();
    await listed?.close();
    await db?.close();
  });

  it("serves any Host when AUTHZ_ALLOWED_HOSTS is unset (a rebinding page has no token to send)", async () => {
    const response = await post(
      open,
      LIST_ROLES,
      {},
      { host: "evil.example.com", authorization: `Bearer ${TOKEN}` },
    );
    expect(response.status).toBe(200);
    const anonymous = await post(open, LIST_ROLES, {}, { host: "evil.example.com" });
    expect(anonymous.status).toBe(401);
  });

  it("refuses a cross-origin write even with a valid admin token, and writes nothing", async () => {
    const response = await post(open, ASSIGN, assign, {
      authorization: adminToken,
      origin: "https://evil.example.com",
    });
    expect(response.status).toBe(403);
    expect(json(response)).toMatchObject({ code: "permission_denied" });
    expect(await writes(db)).toEqual({ roles: 0, audits: 0 });
    const direct = await post(open, ASSIGN, assign, { authorization: adminToken });
    expect(direct.status).toBe(200);
    expect(await writes(db)).toEqual({ roles: 1, audits: 1 });
  });

  it("checks the Host when AUTHZ_ALLOWED_HOSTS is set: the service name passes, others get 421", async () => {
    const auth = { authorization: `Bearer ${TOKEN}` };
    expect((await post(listed, LIST_ROLES, {}, { ...auth, host: "flip-authz:8080" })).status).toBe(200);
    expect(
      (await post(listed, LIST_ROLES, {}, { ...auth, host: `127.0.0.1:${listed.app.httpPort}` })).status,
    ).toBe(200);
    expect((await post(listed, LIST_ROLES, {}, { ...auth, host: "evil.example.com" })).status).toBe(421);
  });

  it("answers a CORS preflight for a listed origin, and not for another", async () => {
    const ask = (origin: string) =>
      rawRequest(`${listed.httpBase}${ASSIGN}`, {
        method: "OPTIONS",
        headers: {
          origin,
          "access-control-request-method": "POST",
          "access-control-request-headers": "authorization, content-type, connect-protocol-version",
        },
      });
    const allowed = await ask("https://console.example.org");
    expect(allowed.status).toBe(204);
    expect(allowed.headers["access-control-allow-origin"]).toBe("https://console.example.org");
    expect(allowed.headers["access-control-allow-methods"]).toBe("POST, GET");
    const headers = String(allowed.headers["access-control-allow-headers"]).toLowerCase().split(/, */);
    expect(headers).toEqual(
      expect.arrayContaining(["authorization", "content-type", "connect-protocol-version"]),
    );
    expect(allowed.headers.vary).toBe("Origin");
    const refused = await ask("https://evil.example.org");
    expect(refused.status).toBe(403);
    expect(Object.keys(refused.headers).filter((h) => h.startsWith("access-control-"))).toEqual([]);
  });

  it("lets a listed origin read and write across origins, with the headers its page needs", async () => {
    const origin = "https://console.example.org";
    const response = await post(listed, "/flip.authz.v1.AuthzService/RevokeRole", assign, {
      authorization: adminToken,
      origin,
    });
    expect(response.status).toBe(200);
    expect(json(response)).toEqual({ changed: true, writtenAt: expect.any(String) });
    expect(await writes(db)).toEqual({ roles: 0, audits: 2 });
    expect(response.headers["access-control-allow-origin"]).toBe(origin);
    expect(String(response.headers["access-control-expose-headers"])).toContain("Grpc-Status");
    const other = await post(
      listed,
      LIST_ROLES,
      {},
      { authorization: `Bearer ${TOKEN}`, origin: "https://evil.example.org" },
    );
    expect(other.status).toBe(200);
    expect(other.headers["access-control-allow-origin"]).toBeUndefined();
  });
});
