// User JWTs verified against a JWKS fetched from AUTHZ_JWKS_URL (a real HTTP server), end to end on both
// listeners: the keys are fetched on the first call, and while the identity provider is down JWT callers
// get UNAUTHENTICATED with a reason, service tokens keep working and the failure is logged without a token.

import { createServer } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthzService } from "../../gen/flip/authz/v1/authz_pb.ts";
import { NIL_UUID } from "../../src/authz/ids.ts";
import { type AppDatabase, createSqliteDatabase } from "../helpers/app.ts";
import { CLIENT_ID, ISSUER, type JwksServer, jwksOf, serveJwks, signAccessToken } from "../helpers/keys.ts";
import {
  bothListeners,
  createTestPool,
  S,
  type SecureApp,
  startSecureApp,
  type TestPool,
} from "../helpers/secure-app.ts";

const m = AuthzService.method;
const TOKEN = "jwks-url-service-token-0123456789";
const ADMIN = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";

/** A URL where nothing listens. */
async function deadUrl(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${port}/.well-known/jwks.json`;
}

describe("JWKS from AUTHZ_JWKS_URL", () => {
  let db: AppDatabase;
  let pool: TestPool;
  beforeAll(async () => {
    db = await createSqliteDatabase();
    pool = await createTestPool();
  });
  afterAll(async () => {
    await db?.close();
  });

  describe("served", () => {
    let jwks: JwksServer;
    let t: SecureApp;
    beforeAll(async () => {
      jwks = await serveJwks(jwksOf(pool.rsa, pool.ec));
      t = await startSecureApp(db.url, {
        AUTHZ_SERVICE_TOKENS: TOKEN,
        AUTHZ_JWT_ISSUER: ISSUER,
        AUTHZ_JWT_AUDIENCE: CLIENT_ID,
        AUTHZ_JWKS_URL: jwks.url,
        AUTHZ_LOG_LEVEL: "info",
      });
      await t.app.authz.assignRole(ADMIN, "Admin", NIL_UUID);
    });
    afterAll(async () => {
      await t?.close();
      await jwks?.close();
    });

    it("fetches the keys once and verifies RS256 and ES256 tokens on both listeners", async () => {
      expect(jwks.requests).toBe(0);
      for (const key of [pool.rsa, pool.ec]) {
        const authorization = `Bearer ${await signAccessToken(key, ADMIN)}`;
        for (const c of bothListeners(t)) {
          const outcome = await c.unary(m.listAuditEvents, { userId: ADMIN }, { authorization });
          c.close();
          expect(outcome, outcome.message).toMatchObject({ code: S.OK });
        }
      }
      expect(jwks.requests).toBe(1);
      // A key the pool did not publish: refused (the refetch cooldown spares the provider).
      const stranger = `Bearer ${await signAccessToken(pool.stranger, ADMIN)}`;
      for (const c of bothListeners(t)) {
        const outcome = await c.unary(m.listRoles, {}, { authorization: stranger });
        c.close();
        expect({ code: outcome.code, message: outcome.message }).toEqual({
          code: S.UNAUTHENTICATED,
          message: "invalid token: unknown signing key",
        });
      }
      // Within the refetch cooldown since the first fetch: refused without asking the provider again.
      expect(jwks.requests).toBe(1);
    });
  });

  describe("the identity provider down", () => {
    let t: SecureApp;
    beforeAll(async () => {
      t = await startSecureApp(db.url, {
        AUTHZ_SERVICE_TOKENS: TOKEN,
        AUTHZ_JWT_ISSUER: ISSUER,
        AUTHZ_JWKS_URL: await deadUrl(),
        AUTHZ_LOG_LEVEL: "info",
      });
    });
    afterAll(async () => {
      await t?.close();
    });

    it("starts; JWT callers get UNAUTHENTICATED, service tokens still read, the failure is logged", async () => {
      const jwt = await signAccessToken(pool.rsa, ADMIN);
      for (const c of bothListeners(t)) {
        const refused = await c.unary(m.listRoles, {}, { authorization: `Bearer ${jwt}` });
        expect({ code: refused.code, message: refused.message }).toEqual({
          code: S.UNAUTHENTICATED,
          message: "invalid token: signing keys unavailable",
        });
        const service = await c.unary(m.getProfile, { userId: ADMIN }, { authorization: `Bearer ${TOKEN}` });
        c.close();
        expect(service).toMatchObject({ code: S.OK, body: { profile: { roles: ["Admin"] } } });
      }
      const warnings = t.logs.filter((line) => line.includes("fetching the JWKS failed"));
      expect(warnings.length).toBeGreaterThanOrEqual(1);
      const log = t.logs.join("");
      for (const part of jwt.split(".")) expect(log).not.toContain(part);
      expect(log).not.toContain(TOKEN);
    });
  });
});
