// /forward-auth and /ext-authz/… on the HTTP listener of the real app (SIDECARS.md §4): each reads the
// original request from its one place only, answers 200 / 401 / 403 / 503 as a proxy needs, and fails
// closed when PostgreSQL is gone. Also the route file's start errors.

import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startApp } from "../../src/app.ts";
import { loadConfig } from "../../src/config.ts";
import { createLogger } from "../../src/logger.ts";
import { type AppDatabase, createPostgresDatabase, createSqliteDatabase } from "../helpers/app.ts";
import {
  denial,
  type GuardedApp,
  type HttpAnswer,
  ROUTES_FILE,
  send,
  startGuardedApp,
  USERS,
} from "../helpers/guarded-app.ts";
import { ISSUER, writeTempFile } from "../helpers/keys.ts";
import { ADMIN_URL, postgresAvailable } from "../helpers/postgres.ts";
import { MADE_REQUEST_ID } from "../helpers/request-id.ts";

async function admin(query: string): Promise<void> {
  const client = new pg.Client({ connectionString: ADMIN_URL });
  client.on("error", () => {});
  await client.connect();
  try {
    await client.query(query);
  } finally {
    await client.end();
  }
}

let db: AppDatabase;
let guarded: GuardedApp;

beforeAll(async () => {
  db = await createSqliteDatabase();
  guarded = await startGuardedApp(db);
});

afterAll(async () => {
  await guarded?.close();
  await db?.close();
});

function forwardAuth(method: string, uri: string, headers: Record<string, string | string[]> = {}) {
  return send(`${guarded.httpBase}/forward-auth`, {
    headers: { "x-forwarded-method": method, "x-forwarded-uri": uri, ...headers },
  });
}

function allowedAs(answer: HttpAnswer, userId: string): void {
  expect(answer.status, answer.body).toBe(200);
  expect(answer.body).toBe("");
  expect(answer.headers["x-flip-user-id"]).toBe(userId);
}

function deniedWith(answer: HttpAnswer, status: 401 | 403 | 503): string {
  expect(answer.status, answer.body).toBe(status);
  expect(answer.headers["content-type"]).toBe("application/json");
  expect(answer.headers["x-flip-user-id"]).toBeUndefined();
  expect(answer.headers["www-authenticate"]).toBe(status === 401 ? "Bearer" : undefined);
  const body = denial(answer);
  expect(body.code).toBe({ 401: "unauthenticated", 403: "permission_denied", 503: "unavailable" }[status]);
  return body.message;
}

describe("/forward-auth", () => {
  it("allows a permitted user, naming them in X-Flip-User-Id, whatever method reaches it", async () => {
    const { researcher, admin } = guarded.bearer;
    allowedAs(await forwardAuth("POST", "/api/projects", { authorization: researcher }), USERS.researcher);
    allowedAs(await forwardAuth("DELETE", "/api/projects/9?force=1", { authorization: admin }), USERS.admin);
    const viaPost = await send(`${guarded.httpBase}/forward-auth?ignored=1`, {
      method: "POST",
      headers: { "x-forwarded-method": "GET", "x-forwarded-uri": "/api/me", authorization: researcher },
      body: "a body nobody reads",
    });
    allowedAs(viaPost, USERS.researcher);
  });

  it("a public route answers 200 with an empty X-Flip-User-Id", async () => {
    const answer = await forwardAuth("GET", "/api/health", { "x-flip-user-id": USERS.admin });
    allowedAs(answer, "");
    expect(answer.headers["x-envoy-auth-headers-to-remove"]).toBeUndefined();
  });

  it("denies 403 without the permission or without a route, 401 without a valid token", async () => {
    expect(
      deniedWith(await forwardAuth("POST", "/api/projects", { authorization: guarded.bearer.viewer }), 403),
    ).toBe("the user does not hold the permission this route needs");
    expect(deniedWith(await forwardAuth("GET", "/admin", { authorization: guarded.bearer.admin }), 403)).toBe(
      "no route allows this request",
    );
    expect(deniedWith(await forwardAuth("POST", "/api/projects"), 401)).toBe("missing credentials");
    expect(
      deniedWith(await forwardAuth("POST", "/api/projects", { authorization: guarded.expired }), 401),
    ).toBe("invalid token: token expired");
  });

  it("reads only X-Forwarded-Method and X-Forwarded-Uri: its own path, query and X-Original-* never count", async () => {
    const viewer = { authorization: guarded.bearer.viewer };
    const missing = "X-Forwarded-Method and X-Forwarded-Uri are required, once each";
    expect(deniedWith(await send(`${guarded.httpBase}/forward-auth`, { headers: viewer }), 403)).toBe(
      missing,
    );
    const originals = {
      "x-original-uri": "/api/health",
      "x-original-method": "GET",
      "x-original-url": "http://x/api/health",
    };
    expect(
      deniedWith(
        await send(`${guarded.httpBase}/forward-auth?uri=/api/health`, {
          headers: { ...viewer, ...originals },
        }),
        403,
      ),
    ).toBe(missing);
    expect(deniedWith(await forwardAuth("POST", "/api/projects", { ...viewer, ...originals }), 403)).toBe(
      "the user does not hold the permission this route needs",
    );
    expect(
      deniedWith(
        await send(`${guarded.httpBase}/forward-auth`, {
          headers: { ...viewer, "x-forwarded-uri": "/api/health" },
        }),
        403,
      ),
    ).toBe(missing);
  });

  it("a repeated X-Forwarded-* or Authorization header is not a choice: denied", async () => {
    const twice = await send(`${guarded.httpBase}/forward-auth`, {
      headers: { "x-forwarded-method": "GET", "x-forwarded-uri": ["/admin", "/api/health"] },
    });
    expect(deniedWith(twice, 403)).toBe("X-Forwarded-Method and X-Forwarded-Uri are required, once each");
    const credentials = await forwardAuth("POST", "/api/projects", {
      authorization: [guarded.bearer.viewer, guarded.bearer.researcher],
    });
    expect(deniedWith(credentials, 401)).toBe("malformed authorization header");
  });

  it("path attacks, strange and huge values are denied, never a crash", async () => {
    const admin = { authorization: guarded.bearer.admin };
    for (const uri of [
      "/api/me/../projects",
      "/api/me/%2e%2e/projects",
      "/api/me%2f..%2fprojects",
      "/api/me/%00",
      "/api/me/%252e%252e",
      "/api/me/..;/x",
      "//api/me",
      "http://evil/api/me",
      "",
      `/api/me/${"a".repeat(6000)}`,
    ]) {
      expect(deniedWith(await forwardAuth("DELETE", uri, admin), 403), uri).toMatch(
        /^the path |^X-Forwarded/,
      );
    }
    deniedWith(await forwardAuth("delete", "/api/projects/1", admin), 403);
    deniedWith(await forwardAuth("", "/api/projects/1", admin), 403);
    const huge = await forwardAuth("GET", `/api/me/${"a".repeat(20_000)}`, admin);
    expect([403, 431]).toContain(huge.status);
  });
});

describe("/ext-authz/<original path>", () => {
  const extAuthz = (method: string, path: string, headers: Record<string, string | string[]> = {}) =>
    send(`${guarded.httpBase}/ext-authz${path}`, { method, headers });

  it("takes this request's own method and the path after the prefix", async () => {
    allowedAs(
      await extAuthz("POST", "/api/projects?x=1", { authorization: guarded.bearer.researcher }),
      USERS.researcher,
    );
    allowedAs(
      await extAuthz("DELETE", "/api/projects/3", { authorization: guarded.bearer.admin }),
      USERS.admin,
    );
    deniedWith(await extAuthz("GET", "/api/projects/3", { authorization: guarded.bearer.admin }), 403);
    deniedWith(await extAuthz("POST", "/api/projects"), 401);
  });

  it("a public route also asks Envoy to drop a client-sent x-flip-user-id", async () => {
    const answer = await extAuthz("GET", "/api/health");
    allowedAs(answer, "");
    expect(answer.headers["x-envoy-auth-headers-to-remove"]).toBe("x-flip-user-id");
  });

  it("never reads X-Forwarded-*; rejects bad paths after the prefix", async () => {
    const naming = { "x-forwarded-method": "GET", "x-forwarded-uri": "/api/health" };
    deniedWith(await extAuthz("POST", "/api/projects", naming), 401);
    deniedWith(await extAuthz("GET", "/admin", naming), 403);
    for (const path of ["", "?/api/health", "//api/health", "/api/me/..%2f..%2fadmin", "/api/me/%2e%2e"]) {
      deniedWith(await extAuthz("GET", path, { authorization: guarded.bearer.admin }), 403);
    }
    // Not ours: a path that only starts like the prefix goes to the Connect router (404).
    expect((await send(`${guarded.httpBase}/ext-authzfoo/api/health`)).status).toBe(404);
  });
});

describe("behind the HTTP listener's browser rules", () => {
  it("a CORS preflight going through a proxy is an original request like any other, not a preflight to us", async () => {
    const preflight = { origin: "https://app.flip.example", "access-control-request-method": "DELETE" };
    const viaEnvoy = await send(`${guarded.httpBase}/ext-authz/api/health`, {
      method: "OPTIONS",
      headers: preflight,
    });
    allowedAs(viaEnvoy, "");
    expect(viaEnvoy.headers["access-control-allow-origin"]).toBeUndefined();
    allowedAs(await forwardAuth("OPTIONS", "/api/health", preflight), "");
    const guardedRoute = await send(`${guarded.httpBase}/ext-authz/api/projects/1`, {
      method: "OPTIONS",
      headers: preflight,
    });
    expect(deniedWith(guardedRoute, 403)).toBe("no route allows this request");
  });

  it("X-Request-Id: the proxy's is echoed; one is made for every denial; an allow nobody gave one gets none", async () => {
    const { researcher, viewer } = guarded.bearer;
    const quiet = await forwardAuth("POST", "/api/projects", { authorization: researcher });
    allowedAs(quiet, USERS.researcher);
    expect(quiet.headers["x-request-id"]).toBeUndefined();
    const sent = await forwardAuth("POST", "/api/projects", {
      authorization: researcher,
      "x-request-id": "nginx-7f3a",
    });
    allowedAs(sent, USERS.researcher);
    expect(sent.headers["x-request-id"]).toBe("nginx-7f3a");
    const denied = await forwardAuth("POST", "/api/projects", { authorization: viewer });
    deniedWith(denied, 403);
    expect(denied.headers["x-request-id"]).toMatch(MADE_REQUEST_ID);
    const unauthenticated = await forwardAuth("POST", "/api/projects", { "x-request-id": "nginx-7f3b" });
    deniedWith(unauthenticated, 401);
    expect(unauthenticated.headers["x-request-id"]).toBe("nginx-7f3b");
    // Sent twice is sent none: a new one.
    const twice = await forwardAuth("POST", "/api/projects", {
      authorization: viewer,
      "x-request-id": ["a", "b"],
    });
    deniedWith(twice, 403);
    expect(twice.headers["x-request-id"]).toMatch(MADE_REQUEST_ID);
    // Every other answer of the listener still carries one.
    expect((await send(`${guarded.httpBase}/healthz`)).headers["x-request-id"]).toMatch(MADE_REQUEST_ID);
  });

  it("with AUTHZ_ALLOWED_HOSTS set, only a listed Host may ask", async () => {
    const other = await createSqliteDatabase();
    const app = await startGuardedApp(other, {
      AUTHZ_ALLOWED_HOSTS: "flip-authz.flip.svc.cluster.local:8080",
    });
    try {
      const ask = (host: string) =>
        send(`${app.httpBase}/forward-auth`, {
          headers: { host, "x-forwarded-method": "GET", "x-forwarded-uri": "/api/health" },
        });
      const misdirected = await ask("api.flip.example");
      expect(misdirected.status).toBe(421);
      expect(misdirected.headers["x-request-id"]).toMatch(MADE_REQUEST_ID);
      allowedAs(await ask("flip-authz.flip.svc.cluster.local:8080"), "");
    } finally {
      await app.close();
      await other.close();
    }
  });
});

describe.skipIf(!postgresAvailable)("fail closed", () => {
  // This test hung past vitest's 30 s in two of six clean-clone CI runs of one day (never alone, nor in
  // fourteen runs under load): each step now fails on its own after STEP_MS, naming itself, and the test is
  // tried up to three times, so a hang says where it was without turning CI red by itself.
  const STEP_MS = 8_000;
  const step = <T>(what: string, work: Promise<T>): Promise<T> => {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`step "${what}" did not finish in ${STEP_MS} ms`)), STEP_MS);
    });
    return Promise.race([work, late]).finally(() => clearTimeout(timer));
  };

  it("when PostgreSQL refuses connections, an uncached user's request is answered 503 and counted as error", {
    retry: 2,
    timeout: 60_000,
  }, async () => {
    const other = await step("create the database", createPostgresDatabase());
    const name = other.pg?.name ?? "";
    const app = await step("start the app", startGuardedApp(other));
    try {
      await step("refuse connections", admin(`ALTER DATABASE "${name}" ALLOW_CONNECTIONS false`));
      await step(
        "end the app's connections",
        admin(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${name}'`),
      );
      const answer = await step(
        "ask /forward-auth",
        send(`${app.httpBase}/forward-auth`, {
          headers: {
            "x-forwarded-method": "POST",
            "x-forwarded-uri": "/api/projects",
            authorization: app.bearer.nobody,
          },
        }),
      );
      expect(deniedWith(answer, 503)).toBe("the request could not be authorized now");
      expect(answer.body).not.toMatch(/postgres|database|connect|Error/i);
      const metrics = (await send(`${app.httpBase}/metrics`)).body;
      expect(metrics).toMatch(/^authz_route_decisions_total\{route="\/api\/projects",decision="error"\} 1$/m);
    } finally {
      await step("accept connections", admin(`ALTER DATABASE "${name}" ALLOW_CONNECTIONS true`));
      await step(
        "close the app",
        app.close().catch(() => {}),
      );
      await step("drop the database", other.close());
    }
  });
});

describe("start errors", () => {
  const start = (env: Record<string, string>) =>
    startApp(
      loadConfig({
        DATABASE_URL: "sqlite::memory:",
        AUTHZ_GRPC_LISTEN: "127.0.0.1:0",
        AUTHZ_HTTP_LISTEN: "127.0.0.1:0",
        ...env,
      }),
      createLogger("silent"),
    );

  it("a bad route file stops the start naming the variable, the file, the route and the problem", async () => {
    const file = writeTempFile(
      "routes.yaml",
      "routes:\n  - path: /a\n    public: true\n  - path: /b/\n    public: true\n",
    );
    await expect(start({ AUTHZ_ROUTES_FILE: file })).rejects.toThrow(
      `AUTHZ_ROUTES_FILE: ${file}: routes[1].path: must not end in / (only the pattern / itself does)`,
    );
    await expect(start({ AUTHZ_ROUTES_FILE: "/nonexistent/routes.yaml" })).rejects.toThrow(
      "AUTHZ_ROUTES_FILE: /nonexistent/routes.yaml: cannot read it (ENOENT)",
    );
  });

  it("a route that needs a user needs AUTHZ_JWT_ISSUER", async () => {
    await expect(start({ AUTHZ_ROUTES_FILE: ROUTES_FILE })).rejects.toThrow(
      `AUTHZ_ROUTES_FILE: ${ROUTES_FILE}: routes[1]: needs a verified user, so AUTHZ_JWT_ISSUER must be set`,
    );
  });

  it("a permission nobody defined stops the start; names and UUIDs resolve like CheckPermission's", async () => {
    const file = writeTempFile(
      "routes.json",
      JSON.stringify({
        routes: [
          { path: "/a", permission: "can_manage_users" },
          { path: "/b", permission: "f6dbd04e-d1ef-4cb7-84c2-c29fb35cf83b" },
          { path: "/c", permission: "CAN_FLY" },
        ],
      }),
    );
    const jwks = guarded.pool.jwksFile;
    await expect(
      start({ AUTHZ_ROUTES_FILE: file, AUTHZ_JWT_ISSUER: ISSUER, AUTHZ_JWKS_FILE: jwks }),
    ).rejects.toThrow(
      `AUTHZ_ROUTES_FILE: ${file}: routes[2].permission: no permission "CAN_FLY" (see ListPermissions)`,
    );
  });
});
