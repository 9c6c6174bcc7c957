// The real app guarding HTTP routes: deploy/routes.yaml as AUTHZ_ROUTES_FILE, user JWTs verified against a
// JWKS file of real keys, a service token, and FLIP users holding roles (an Admin, a Researcher, a Viewer);
// plus a plain HTTP client that can send any header, repeated ones included.

import { request as httpRequest, type IncomingHttpHeaders } from "node:http";
import { resolve } from "node:path";
import { NIL_UUID } from "../../src/authz/ids.ts";
import type { Env } from "../../src/config.ts";
import type { AppDatabase } from "./app.ts";
import { CLIENT_ID, ISSUER, signAccessToken } from "./keys.ts";
import { createTestPool, type SecureApp, startSecureApp, type TestPool } from "./secure-app.ts";

export const ROUTES_FILE = resolve("deploy/routes.yaml");
export const SERVICE_TOKEN = "svc-token-guard-0123456789abcdef";

export const USERS = {
  admin: "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
  researcher: "1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e",
  viewer: "2c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f",
  nobody: "3d4e5f6a-7b8c-4d9e-8f0a-2b3c4d5e6f70",
} as const;

export interface GuardedApp extends SecureApp {
  pool: TestPool;
  /** `Bearer <access token>` for each user. */
  bearer: Record<keyof typeof USERS, string>;
  /** `Bearer <expired access token>` of the researcher. */
  expired: string;
}

/** Starts the app on `db` with the route table and credentials; `env` overrides. */
export async function startGuardedApp(db: AppDatabase, env: Env = {}): Promise<GuardedApp> {
  const pool = await createTestPool();
  const app = await startSecureApp(db.url, {
    AUTHZ_SERVICE_TOKENS: SERVICE_TOKEN,
    AUTHZ_JWT_ISSUER: ISSUER,
    AUTHZ_JWT_AUDIENCE: CLIENT_ID,
    AUTHZ_JWKS_FILE: pool.jwksFile,
    AUTHZ_ROUTES_FILE: ROUTES_FILE,
    AUTHZ_LOG_LEVEL: "warn",
    ...env,
  });
  const { authz } = app.app;
  await authz.assignRole(USERS.admin, "Admin", NIL_UUID);
  await authz.assignRole(USERS.researcher, "Researcher", NIL_UUID);
  await authz.assignRole(USERS.viewer, "Viewer", NIL_UUID);
  const sign = async (user: string) => `Bearer ${await signAccessToken(pool.rsa, user)}`;
  const bearer = {
    admin: await sign(USERS.admin),
    researcher: await sign(USERS.researcher),
    viewer: await sign(USERS.viewer),
    nobody: await sign(USERS.nobody),
  };
  const expired = `Bearer ${await signAccessToken(pool.ec, USERS.researcher, { expiresIn: -3600 })}`;
  return { ...app, pool, bearer, expired };
}

export interface HttpAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** One HTTP/1.1 request on its own connection; a header given as a list is sent once per value. */
export function send(
  url: string,
  options: { method?: string; headers?: Record<string, string | string[]>; body?: string } = {},
): Promise<HttpAnswer> {
  return new Promise((resolveAnswer, reject) => {
    const request = httpRequest(
      url,
      { method: options.method ?? "GET", headers: options.headers, agent: false },
      (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("end", () =>
          resolveAnswer({
            status: response.statusCode ?? 0,
            headers: response.headers,
            body: Buffer.concat(chunks).toString("utf8"),
          }),
        );
        response.on("error", reject);
      },
    );
    request.on("error", reject);
    request.end(options.body);
  });
}

/** The JSON body of a denial. */
export function denial(answer: HttpAnswer): { code: string; message: string } {
  return JSON.parse(answer.body) as { code: string; message: string };
}
