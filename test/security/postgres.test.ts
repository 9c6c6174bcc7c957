// Admin writes with user JWTs on PostgreSQL, both listeners: the users_audit rows carry the admin's sub,
// a researcher's writes leave no row; and the database password, the service token and the JWTs never
// reach the trace log, also when the database cannot be reached at start.

import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthzService } from "../../gen/flip/authz/v1/authz_pb.ts";
import { startApp } from "../../src/app.ts";
import { NIL_UUID } from "../../src/authz/ids.ts";
import { loadConfig } from "../../src/config.ts";
import { createLogger } from "../../src/logger.ts";
import { type AppDatabase, createPostgresDatabase } from "../helpers/app.ts";
import { CLIENT_ID, ISSUER, signAccessToken } from "../helpers/keys.ts";
import { postgresAvailable } from "../helpers/postgres.ts";
import {
  createConnectClient,
  createGrpcClient,
  createTestPool,
  type ListenerClient,
  S,
  type SecureApp,
  startSecureApp,
} from "../helpers/secure-app.ts";

const m = AuthzService.method;
const ADMIN = "b1a2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";
const RESEARCHER = "c2b3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e";
const TOKEN = "pg-service-token-0123456789abcdef";
const PASSWORD = "pg-Pa55word-never-logged-7f3a";

function withPassword(url: string): string {
  const parsed = new URL(url);
  parsed.password = PASSWORD;
  return parsed.toString();
}

describe.skipIf(!postgresAvailable)("callers on PostgreSQL", () => {
  let db: AppDatabase;
  let t: SecureApp;
  const tokens: string[] = [];
  let admin: { rs256: string; es256: string };
  let researcher: string;

  const audit = (userId: string) =>
    db.sql('SELECT action, modified_by_user_id FROM users_audit WHERE user_id = ? ORDER BY "timestamp", id', [
      userId,
    ]);

  beforeAll(async () => {
    db = await createPostgresDatabase();
    const pool = await createTestPool();
    // The test server trusts local connections, so the password is carried but not needed.
    t = await startSecureApp(withPassword(db.url), {
      AUTHZ_SERVICE_TOKENS: TOKEN,
      AUTHZ_JWT_ISSUER: ISSUER,
      AUTHZ_JWT_AUDIENCE: CLIENT_ID,
      AUTHZ_JWKS_FILE: pool.jwksFile,
      AUTHZ_LOG_LEVEL: "trace",
    });
    await t.app.authz.assignRole(ADMIN, "Admin", NIL_UUID);
    await t.app.authz.assignRole(RESEARCHER, "Researcher", NIL_UUID);
    const sign = async (...args: Parameters<typeof signAccessToken>) => {
      const token = await signAccessToken(...args);
      tokens.push(token);
      return `Bearer ${token}`;
    };
    admin = { rs256: await sign(pool.rsa, ADMIN.toUpperCase()), es256: await sign(pool.ec, ADMIN) };
    researcher = await sign(pool.rsaNext, RESEARCHER);
  });
  afterAll(async () => {
    await t?.close();
    await db?.close();
  });

  describe.each(["grpc", "connect"] as const)("on the %s listener", (listener) => {
    let c: ListenerClient;
    beforeAll(() => {
      c = listener === "grpc" ? createGrpcClient(t.grpcTarget) : createConnectClient(t.httpBase);
    });
    afterAll(() => c?.close());

    it.each(["rs256", "es256"] as const)(
      "an Admin (%s) writes; every audit row names the admin",
      async (alg) => {
        const auth = { authorization: admin[alg] };
        const user = randomUUID();
        for (const outcome of [
          await c.unary(m.assignRole, { userId: user, role: "Researcher" }, auth),
          await c.unary(
            m.setUserRoles,
            { userId: user.toUpperCase(), roles: ["viewer", "Researcher"] },
            auth,
          ),
          await c.unary(m.revokeRole, { userId: user, role: "Viewer" }, auth),
        ]) {
          expect(outcome, outcome.message).toMatchObject({ code: S.OK, body: { changed: true } });
        }
        const profile = await c.unary(m.updateProfile, { userId: user, organisation: "Guy's" }, auth);
        expect(profile).toMatchObject({
          code: S.OK,
          body: { profile: { userId: user, organisation: "Guy's" } },
        });
        expect(await audit(user)).toEqual([
          { action: "Assigned role Researcher", modified_by_user_id: ADMIN },
          { action: "Updated user roles", modified_by_user_id: ADMIN },
          { action: "Revoked role Viewer", modified_by_user_id: ADMIN },
          { action: "Updated user profile", modified_by_user_id: ADMIN },
        ]);
        const roles = await db.sql(
          "SELECT r.name FROM user_role ur JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = ?",
          [user],
        );
        expect(roles).toEqual([{ name: "Researcher" }]);
      },
    );

    it("a Researcher's writes are refused and leave no row; the service token's too", async () => {
      const user = randomUUID();
      const outcome = await c.unary(
        m.assignRole,
        { userId: user, role: "Admin" },
        { authorization: researcher },
      );
      expect(outcome).toMatchObject({
        code: S.PERMISSION_DENIED,
        message: "AssignRole needs CAN_MANAGE_USERS",
      });
      const byService = await c.unary(
        m.setUserRoles,
        { userId: user, roles: ["Admin"] },
        { authorization: `Bearer ${TOKEN}` },
      );
      expect(byService).toMatchObject({
        code: S.PERMISSION_DENIED,
        message: "service tokens may not call SetUserRoles (it writes); use a user token",
      });
      expect(await db.sql("SELECT user_id FROM user_role WHERE user_id = ?", [user])).toEqual([]);
      expect(await audit(user)).toEqual([]);
    });

    it("the Researcher updates their own profile, audited with their sub", async () => {
      const name = `Rosalind ${listener}`;
      const outcome = await c.unary(
        m.updateProfile,
        { userId: RESEARCHER, name },
        { authorization: researcher },
      );
      expect(outcome).toMatchObject({ code: S.OK, body: { profile: { name } } });
      expect((await audit(RESEARCHER)).at(-1)).toEqual({
        action: "Updated user profile",
        modified_by_user_id: RESEARCHER,
      });
    });
  });

  it("the trace log shows the database without its password and holds no credential", () => {
    const log = t.logs.join("");
    const listening = t.logs.find((line) => line.includes('"flip-authz listening"')) ?? "";
    expect(listening).toContain(`"database":"${withPassword(db.url).replace(PASSWORD, "***")}"`);
    expect(log).not.toContain(PASSWORD);
    expect(log).not.toContain(TOKEN);
    expect(tokens).toHaveLength(3);
    for (const token of tokens) for (const part of token.split(".")) expect(log).not.toContain(part);
  });

  it("a start against an unreachable server fails without the password in the message or the log", async () => {
    const logs: string[] = [];
    const config = loadConfig({
      DATABASE_URL: `postgres://flip:${PASSWORD}@127.0.0.1:1/flip`,
      AUTHZ_GRPC_LISTEN: "127.0.0.1:0",
      AUTHZ_HTTP_LISTEN: "127.0.0.1:0",
      AUTHZ_SERVICE_TOKENS: TOKEN,
    });
    const error = await startApp(
      config,
      createLogger("trace", { write: (line: string) => void logs.push(line) }),
    ).then(
      async (app) => {
        await app.shutdown();
        return undefined;
      },
      (caught: unknown) => caught as Error,
    );
    expect(error).toBeInstanceOf(Error);
    expect(error?.message).not.toContain(PASSWORD);
    expect(String(error?.stack)).not.toContain(PASSWORD);
    expect(logs.join("")).not.toContain(PASSWORD);
  });
});
