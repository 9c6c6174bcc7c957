// "Callers and credentials" end to end: the real app on a SQLite file with two service tokens and user JWTs
// verified against a JWKS file of real RSA and EC keys, every case called on both listeners (gRPC through
// @grpc/grpc-js, Connect JSON over HTTP). Asserts the status code and message a user sees, the rows the
// writes leave in FLIP's tables, and that no credential reaches the message or the log.

import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { resolve } from "node:path";
import { promisify } from "node:util";
import type { JsonValue } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthzService } from "../../gen/flip/authz/v1/authz_pb.ts";
import { Health } from "../../gen/grpc/health/v1/health_pb.ts";
import { NIL_UUID } from "../../src/authz/ids.ts";
import { type AppDatabase, createSqliteDatabase, eventually } from "../helpers/app.ts";
import {
  CLIENT_ID,
  hs256WithPublicKey,
  ISSUER,
  signAccessToken,
  tamperPayload,
  unsecuredToken,
} from "../helpers/keys.ts";
import {
  createConnectClient,
  createGrpcClient,
  createTestPool,
  type ListenerClient,
  type Outcome,
  rawRequest,
  S,
  type SecureApp,
  startSecureApp,
  type TestPool,
} from "../helpers/secure-app.ts";

const m = AuthzService.method;
const run = promisify(execFile);
const BUF = resolve("node_modules/.bin/buf");

const ADMIN = "7d1e4c0a-5b2f-4c8e-9a3d-1f2e3d4c5b6a";
const RESEARCHER = "a3c5e7f9-1b2d-4f6a-8c0e-2d4f6a8c0e1b";
const SERVICE_TOKENS = ["svc-token-current-0123456789abcdef", "svc-token-previous-fedcba9876543210"] as const;
const DENIED_WRITE = (method: string) =>
  `service tokens may not call ${method} (it writes); use a user token`;

/** Every credential sent in this file, to prove none reaches a message or the log. */
const sent = new Set<string>(SERVICE_TOKENS);
const bearer = (credential: string) => {
  sent.add(credential);
  return `Bearer ${credential}`;
};

function expectOk(outcome: Outcome): JsonValue {
  expect(outcome, outcome.message).toMatchObject({ code: S.OK });
  return outcome.body as JsonValue;
}

function expectStatus(outcome: Outcome, code: number, message: string): void {
  expect({ code: S[outcome.code], message: outcome.message }).toEqual({ code: S[code], message });
  for (const credential of sent) expect(outcome.message).not.toContain(credential);
}

describe("callers and credentials, SQLite file", () => {
  let db: AppDatabase;
  let pool: TestPool;
  let t: SecureApp;
  /** Admin tokens: RS256 (lower-case sub), ES256 (upper-case sub), RS256 under the second RSA key. */
  let admin: Record<"rs256" | "es256" | "rs256Next", string>;
  let researcher: string;

  const sql = (query: string, params?: (string | number | null)[]) => db.sql(query, params);
  const audit = (userId: string) =>
    sql('SELECT action, modified_by_user_id FROM users_audit WHERE user_id = ? ORDER BY "timestamp", id', [
      userId,
    ]);
  const roleNames = async (userId: string) =>
    (
      await sql(
        "SELECT r.name FROM user_role ur JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = ? ORDER BY r.name",
        [userId],
      )
    ).map((row) => String(row.name));

  beforeAll(async () => {
    db = await createSqliteDatabase();
    pool = await createTestPool();
    t = await startSecureApp(db.url, {
      AUTHZ_SERVICE_TOKENS: SERVICE_TOKENS.join(","),
      AUTHZ_JWT_ISSUER: ISSUER,
      AUTHZ_JWT_AUDIENCE: CLIENT_ID,
      AUTHZ_JWKS_FILE: pool.jwksFile,
      AUTHZ_LOG_LEVEL: "trace",
    });
    // Bootstrap as the CLI does: audited with the nil UUID.
    await t.app.authz.assignRole(ADMIN, "Admin", NIL_UUID);
    await t.app.authz.assignRole(RESEARCHER, "Researcher", NIL_UUID);
    admin = {
      rs256: bearer(await signAccessToken(pool.rsa, ADMIN)),
      es256: bearer(await signAccessToken(pool.ec, ADMIN.toUpperCase())),
      rs256Next: bearer(await signAccessToken(pool.rsaNext, ADMIN)),
    };
    researcher = bearer(await signAccessToken(pool.ec, RESEARCHER));
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

    describe("an Admin's access token", () => {
      it.each(["rs256", "es256", "rs256Next"] as const)(
        "(%s) writes roles, audited with the admin's sub in lower case",
        async (which) => {
          const auth = { authorization: admin[which] };
          const user = randomUUID();
          expect(
            expectOk(await c.unary(m.assignRole, { userId: user, role: "researcher" }, auth)),
          ).toMatchObject({
            changed: true,
            roles: ["Researcher"],
          });
          expect(
            expectOk(await c.unary(m.setUserRoles, { userId: user, roles: ["Viewer", "Researcher"] }, auth)),
          ).toMatchObject({ changed: true, roles: ["Researcher", "Viewer"] });
          expect(expectOk(await c.unary(m.revokeRole, { userId: user, role: "Viewer" }, auth))).toMatchObject(
            {
              changed: true,
              roles: ["Researcher"],
            },
          );
          expect(await roleNames(user)).toEqual(["Researcher"]);
          expect(await audit(user)).toEqual([
            { action: "Assigned role Researcher", modified_by_user_id: ADMIN },
            { action: "Updated user roles", modified_by_user_id: ADMIN },
            { action: "Revoked role Viewer", modified_by_user_id: ADMIN },
          ]);
        },
      );

      it("updates another user's profile, audited with the admin as actor", async () => {
        const user = randomUUID();
        const answer = expectOk(
          await c.unary(
            m.updateProfile,
            { userId: user, name: "Grace H.", organisation: "KCL" },
            { authorization: admin.es256 },
          ),
        );
        expect(answer).toMatchObject({ profile: { userId: user, name: "Grace H.", organisation: "KCL" } });
        expect(await sql("SELECT name, organisation FROM user_profile WHERE user_id = ?", [user])).toEqual([
          { name: "Grace H.", organisation: "KCL" },
        ]);
        expect(await audit(user)).toEqual([{ action: "Updated user profile", modified_by_user_id: ADMIN }]);
      });

      it("reads anyone and the audit log", async () => {
        const auth = { authorization: admin.rs256 };
        expect(expectOk(await c.unary(m.getProfile, { userId: RESEARCHER }, auth))).toMatchObject({
          profile: { userId: RESEARCHER, roles: ["Researcher"] },
        });
        expect(
          expectOk(
            await c.unary(m.checkPermission, { userId: RESEARCHER, permission: "CAN_MANAGE_USERS" }, auth),
          ),
        ).not.toHaveProperty("allowed");
        const { events } = expectOk(
          await c.unary(m.listAuditEvents, { userId: RESEARCHER, pageSize: 500 }, auth),
        ) as { events: unknown[] };
        // Newest first: the oldest is the bootstrap, audited with the nil UUID.
        expect(events.at(-1)).toMatchObject({
          action: "Assigned role Researcher",
          userId: RESEARCHER,
          modifiedByUserId: NIL_UUID,
        });
      });
    });

    describe("a Researcher's access token", () => {
      it("is refused every write, naming CAN_MANAGE_USERS, and nothing is written (not even to themself)", async () => {
        const auth = { authorization: researcher };
        const user = randomUUID();
        for (const target of [user, RESEARCHER]) {
          expectStatus(
            await c.unary(m.assignRole, { userId: target, role: "Admin" }, auth),
            S.PERMISSION_DENIED,
            "AssignRole needs CAN_MANAGE_USERS",
          );
          expectStatus(
            await c.unary(m.revokeRole, { userId: target, role: "Researcher" }, auth),
            S.PERMISSION_DENIED,
            "RevokeRole needs CAN_MANAGE_USERS",
          );
          expectStatus(
            await c.unary(m.setUserRoles, { userId: target, roles: ["Admin"] }, auth),
            S.PERMISSION_DENIED,
            "SetUserRoles needs CAN_MANAGE_USERS",
          );
        }
        expect(await roleNames(user)).toEqual([]);
        expect(await roleNames(RESEARCHER)).toEqual(["Researcher"]);
        expect(await audit(user)).toEqual([]);
      });

      it("is refused reads and profile updates about another user", async () => {
        const auth = { authorization: researcher };
        expectStatus(
          await c.unary(m.getProfile, { userId: ADMIN }, auth),
          S.PERMISSION_DENIED,
          "GetProfile about another user needs CAN_MANAGE_USERS",
        );
        expectStatus(
          await c.unary(m.checkPermission, { userId: ADMIN, permission: "CAN_MANAGE_USERS" }, auth),
          S.PERMISSION_DENIED,
          "CheckPermission about another user needs CAN_MANAGE_USERS",
        );
        expectStatus(
          await c.unary(
            m.checkPermissions,
            {
              checks: [
                { userId: RESEARCHER, permission: "CAN_CREATE_PROJECTS" },
                { userId: ADMIN, permission: "CAN_MANAGE_USERS" },
              ],
            },
            auth,
          ),
          S.PERMISSION_DENIED,
          "CheckPermissions about another user needs CAN_MANAGE_USERS",
        );
        const other = randomUUID();
        expectStatus(
          await c.unary(m.updateProfile, { userId: other, name: "Mallory" }, auth),
          S.PERMISSION_DENIED,
          "UpdateProfile about another user needs CAN_MANAGE_USERS",
        );
        expect(await sql("SELECT name FROM user_profile WHERE user_id = ?", [other])).toEqual([]);
        expect(await audit(other)).toEqual([]);
      });

      it("reads and updates themself (user_id in any case), audited with their own sub", async () => {
        const auth = { authorization: researcher };
        expect(
          expectOk(await c.unary(m.getProfile, { userId: RESEARCHER.toUpperCase() }, auth)),
        ).toMatchObject({
          profile: { userId: RESEARCHER, roles: ["Researcher"] },
        });
        expect(
          expectOk(
            await c.unary(m.checkPermission, { userId: RESEARCHER, permission: "CAN_CREATE_PROJECTS" }, auth),
          ),
        ).toMatchObject({ allowed: true, grantedBy: ["Researcher"] });
        expect(
          expectOk(
            await c.unary(
              m.checkPermissions,
              { checks: [{ userId: RESEARCHER.toUpperCase(), permission: "CAN_MANAGE_USERS" }] },
              auth,
            ),
          ),
        ).toEqual({ results: [expect.not.objectContaining({ allowed: true })] });
        const name = `Ada ${listener}`;
        expect(
          expectOk(await c.unary(m.updateProfile, { userId: RESEARCHER, name, organisation: "UCL" }, auth)),
        ).toMatchObject({ profile: { userId: RESEARCHER, name, organisation: "UCL" } });
        expect(await sql("SELECT name FROM user_profile WHERE user_id = ?", [RESEARCHER])).toEqual([
          { name },
        ]);
        const rows = await audit(RESEARCHER);
        expect(rows.at(-1)).toEqual({ action: "Updated user profile", modified_by_user_id: RESEARCHER });
      });

      it("lists roles and permissions, but not the audit log nor the change stream", async () => {
        const auth = { authorization: researcher };
        const roles = expectOk(await c.unary(m.listRoles, {}, auth)) as { roles: { name: string }[] };
        expect(roles.roles.map((role) => role.name)).toContain("Admin");
        const permissions = expectOk(await c.unary(m.listPermissions, {}, auth)) as {
          permissions: { name: string }[];
        };
        expect(permissions.permissions.map((permission) => permission.name)).toContain("CAN_MANAGE_USERS");
        expectStatus(
          await c.unary(m.listAuditEvents, {}, auth),
          S.PERMISSION_DENIED,
          "ListAuditEvents needs CAN_MANAGE_USERS",
        );
        expectStatus(
          await c.unary(m.listAuditEvents, { userId: RESEARCHER }, auth),
          S.PERMISSION_DENIED,
          "ListAuditEvents needs CAN_MANAGE_USERS",
        );
        const stream = c.stream(m.watchChanges, {}, auth);
        try {
          const first = await stream.next();
          expect(first).toHaveProperty("end");
          if ("end" in first)
            expectStatus(first.end, S.PERMISSION_DENIED, "WatchChanges needs CAN_MANAGE_USERS");
        } finally {
          stream.close();
        }
      });

      it("ends a manager's WatchChanges with PERMISSION_DENIED once their rights end, before the next change", async () => {
        const watcher = randomUUID();
        const token = bearer(await signAccessToken(pool.rsa, watcher));
        const granted = expectOk(
          await c.unary(m.assignRole, { userId: watcher, role: "Admin" }, { authorization: admin.rs256 }),
        ) as { writtenAt: string };
        // From the grant on, whenever the server takes the call: no change can slip in before it.
        const stream = c.stream(m.watchChanges, { after: granted.writtenAt }, { authorization: token });
        try {
          const seen = randomUUID();
          expectOk(
            await c.unary(m.assignRole, { userId: seen, role: "Viewer" }, { authorization: admin.rs256 }),
          );
          expect(await stream.next()).toMatchObject({
            message: { kind: "CHANGE_KIND_USER_ROLES", userId: seen },
          });
          // The revocation is the next change: it is not delivered to the one who just lost the right.
          expectOk(
            await c.unary(m.revokeRole, { userId: watcher, role: "Admin" }, { authorization: admin.rs256 }),
          );
          const end = await stream.next();
          expect(end).toHaveProperty("end");
          if ("end" in end) expectStatus(end.end, S.PERMISSION_DENIED, "WatchChanges needs CAN_MANAGE_USERS");
        } finally {
          stream.close();
        }
      });

      it("gains a manager's rights once made Admin, and loses them when revoked (writes read the database)", async () => {
        const user = randomUUID();
        const token = bearer(await signAccessToken(pool.rsa, user));
        const target = randomUUID();
        expectStatus(
          await c.unary(m.assignRole, { userId: target, role: "Viewer" }, { authorization: token }),
          S.PERMISSION_DENIED,
          "AssignRole needs CAN_MANAGE_USERS",
        );
        expectOk(
          await c.unary(m.assignRole, { userId: user, role: "Admin" }, { authorization: admin.rs256 }),
        );
        expectOk(await c.unary(m.assignRole, { userId: target, role: "Viewer" }, { authorization: token }));
        expect(await audit(target)).toEqual([{ action: "Assigned role Viewer", modified_by_user_id: user }]);
        expectOk(await c.unary(m.listAuditEvents, { userId: target }, { authorization: token }));
        expectOk(
          await c.unary(m.revokeRole, { userId: user, role: "Admin" }, { authorization: admin.rs256 }),
        );
        // Reads guarded by CAN_MANAGE_USERS see the revocation at once too (this instance wrote it).
        expectStatus(
          await c.unary(m.listAuditEvents, { userId: target }, { authorization: token }),
          S.PERMISSION_DENIED,
          "ListAuditEvents needs CAN_MANAGE_USERS",
        );
        expectStatus(
          await c.unary(m.getProfile, { userId: target }, { authorization: token }),
          S.PERMISSION_DENIED,
          "GetProfile about another user needs CAN_MANAGE_USERS",
        );
        expectStatus(
          await c.unary(m.revokeRole, { userId: target, role: "Viewer" }, { authorization: token }),
          S.PERMISSION_DENIED,
          "RevokeRole needs CAN_MANAGE_USERS",
        );
        expect(await roleNames(target)).toEqual(["Viewer"]);
      });
      it("an Admin removed by another process (plain SQL) is refused writes at once, and reads soon after", async () => {
        const user = randomUUID();
        const token = bearer(await signAccessToken(pool.ec, user));
        expectOk(
          await c.unary(m.assignRole, { userId: user, role: "Admin" }, { authorization: admin.rs256 }),
        );
        expectOk(await c.unary(m.listAuditEvents, { pageSize: 1 }, { authorization: token }));
        // What FLIP's own API does: delete the row, no audit, no call to this service.
        await sql(
          "DELETE FROM user_role WHERE user_id = ? AND role_id = (SELECT id FROM roles WHERE name = 'Admin')",
          [user],
        );
        const target = randomUUID();
        expectStatus(
          await c.unary(m.assignRole, { userId: target, role: "Admin" }, { authorization: token }),
          S.PERMISSION_DENIED,
          "AssignRole needs CAN_MANAGE_USERS",
        );
        expect(await roleNames(target)).toEqual([]);
        await eventually(
          async () =>
            (await c.unary(m.listAuditEvents, { pageSize: 1 }, { authorization: token })).code ===
            S.PERMISSION_DENIED,
          5000,
        );
      });
    });

    describe("credentials that are not accepted", () => {
      const cases: [string, () => Promise<string | undefined>, string][] = [
        [
          "expired",
          () => signAccessToken(pool.rsa, ADMIN, { expiresIn: -120 }),
          "invalid token: token expired",
        ],
        [
          "not yet valid",
          () => signAccessToken(pool.rsa, ADMIN, { notBefore: 600 }),
          "invalid token: token not yet valid",
        ],
        [
          "wrong issuer",
          () => signAccessToken(pool.rsa, ADMIN, { claims: { iss: `${ISSUER}x` } }),
          "invalid token: wrong issuer",
        ],
        [
          "wrong client id",
          () => signAccessToken(pool.ec, ADMIN, { claims: { client_id: "some-other-client" } }),
          "invalid token: wrong client",
        ],
        [
          "an ID token",
          () =>
            signAccessToken(pool.rsa, ADMIN, {
              claims: { token_use: "id", aud: CLIENT_ID, client_id: undefined },
            }),
          "invalid token: not an access token",
        ],
        [
          "alg none",
          async () => unsecuredToken(pool.rsa.kid, ADMIN),
          "invalid token: algorithm not allowed (RS256 or ES256 only)",
        ],
        [
          "HS256 signed with the public key",
          () => hs256WithPublicKey(pool.rsa, ADMIN),
          "invalid token: algorithm not allowed (RS256 or ES256 only)",
        ],
        ["an unknown kid", () => signAccessToken(pool.stranger, ADMIN), "invalid token: unknown signing key"],
        [
          "a valid key under another key's kid",
          () => signAccessToken(pool.rsa, ADMIN, { header: { kid: pool.rsaNext.kid } }),
          "invalid token: invalid signature",
        ],
        [
          "a tampered payload",
          async () => tamperPayload(await signAccessToken(pool.ec, RESEARCHER), { sub: ADMIN }),
          "invalid token: invalid signature",
        ],
        [
          "a sub that is not a UUID",
          () => signAccessToken(pool.rsa, "admin-user"),
          "invalid token: sub is not a UUID",
        ],
        [
          "no exp",
          () => signAccessToken(pool.rsa, ADMIN, { expiresIn: null }),
          'invalid token: missing "exp" claim',
        ],
        ["garbage", async () => "not-a-jwt-at-all-0123456789", "invalid token: malformed token"],
        [
          "a wrong service token",
          async () => "svc-token-current-0123456789abcdeX",
          "invalid token: malformed token",
        ],
      ];

      it.each(cases)("%s → UNAUTHENTICATED without echoing the token", async (_name, make, message) => {
        const token = (await make()) as string;
        const outcome = await c.unary(m.listRoles, {}, { authorization: bearer(token) });
        expectStatus(outcome, S.UNAUTHENTICATED, message);
        for (const part of token.split(".")) if (part.length > 8) expect(outcome.message).not.toContain(part);
        if (listener === "connect") expect(outcome.httpStatus).toBe(401);
        // The same refusal on a write and on a read about the caller themself.
        expectStatus(
          await c.unary(
            m.assignRole,
            { userId: randomUUID(), role: "Viewer" },
            { authorization: bearer(token) },
          ),
          S.UNAUTHENTICATED,
          message,
        );
        expectStatus(
          await c.unary(m.getProfile, { userId: ADMIN }, { authorization: bearer(token) }),
          S.UNAUTHENTICATED,
          message,
        );
      });

      it("no authorization header, an empty one, the Basic scheme, a bare token", async () => {
        expectStatus(await c.unary(m.listRoles, {}), S.UNAUTHENTICATED, "missing credentials");
        expectStatus(
          await c.unary(m.listRoles, {}, { authorization: "" }),
          S.UNAUTHENTICATED,
          "missing credentials",
        );
        expectStatus(
          await c.unary(m.listRoles, {}, { authorization: "Basic xyz" }),
          S.UNAUTHENTICATED,
          "malformed authorization header",
        );
        const bare = SERVICE_TOKENS[0];
        expectStatus(
          await c.unary(m.listRoles, {}, { authorization: bare }),
          S.UNAUTHENTICATED,
          "malformed authorization header",
        );
        expectStatus(
          await c.unary(
            m.listRoles,
            {},
            { authorization: `Basic ${Buffer.from(`x:${bare}`).toString("base64")}` },
          ),
          S.UNAUTHENTICATED,
          "malformed authorization header",
        );
        const stream = c.stream(m.watchChanges, {});
        try {
          const first = await stream.next();
          expect(first).toHaveProperty("end");
          if ("end" in first) expectStatus(first.end, S.UNAUTHENTICATED, "missing credentials");
        } finally {
          stream.close();
        }
      });
    });

    describe("credentials accepted at the edges of the rules", () => {
      const accepted: [string, () => Promise<string>][] = [
        ["expired 30 s ago (60 s leeway)", () => signAccessToken(pool.rsa, RESEARCHER, { expiresIn: -30 })],
        [
          "valid from 30 s ahead (60 s leeway)",
          () => signAccessToken(pool.ec, RESEARCHER, { notBefore: 30 }),
        ],
        [
          "no token_use, the client in aud (another issuer's shape)",
          () =>
            signAccessToken(pool.rsa, RESEARCHER, {
              claims: { token_use: undefined, client_id: undefined, aud: ["other", CLIENT_ID] },
            }),
        ],
        ["the scheme in lower case", () => signAccessToken(pool.rsaNext, RESEARCHER)],
      ];
      it.each(accepted)("%s", async (name, make) => {
        const token = await make();
        sent.add(token);
        const scheme = name.includes("lower case") ? "bearer" : "Bearer";
        const outcome = await c.unary(
          m.getProfile,
          { userId: RESEARCHER },
          { authorization: `${scheme} ${token}` },
        );
        expect(outcome, outcome.message).toMatchObject({
          code: S.OK,
          body: { profile: { userId: RESEARCHER } },
        });
      });

      it("past the leeway is refused: expired 90 s ago, valid from 90 s ahead", async () => {
        const expired = bearer(await signAccessToken(pool.rsa, RESEARCHER, { expiresIn: -90 }));
        expectStatus(
          await c.unary(m.getProfile, { userId: RESEARCHER }, { authorization: expired }),
          S.UNAUTHENTICATED,
          "invalid token: token expired",
        );
        const early = bearer(await signAccessToken(pool.rsa, RESEARCHER, { notBefore: 90 }));
        expectStatus(
          await c.unary(m.getProfile, { userId: RESEARCHER }, { authorization: early }),
          S.UNAUTHENTICATED,
          "invalid token: token not yet valid",
        );
      });
    });

    describe("service tokens", () => {
      it.each([0, 1])("token #%i reads everything and may open WatchChanges", async (index) => {
        const auth = { authorization: `Bearer ${SERVICE_TOKENS[index]}` };
        expect(
          expectOk(await c.unary(m.checkPermission, { userId: ADMIN, permission: "can_manage_users" }, auth)),
        ).toMatchObject({ allowed: true, grantedBy: ["Admin"] });
        expect(expectOk(await c.unary(m.getProfile, { userId: ADMIN.toUpperCase() }, auth))).toMatchObject({
          profile: { userId: ADMIN, roles: ["Admin"] },
        });
        expect(expectOk(await c.unary(m.listRoles, {}, auth))).toHaveProperty("roles");
        expect(expectOk(await c.unary(m.listPermissions, {}, auth))).toHaveProperty("permissions");
        expect(expectOk(await c.unary(m.listAuditEvents, { userId: ADMIN }, auth))).toMatchObject({
          events: [{ action: "Assigned role Admin", userId: ADMIN, modifiedByUserId: NIL_UUID }],
        });

        // From a known revision, so the change below arrives however late the server takes the call.
        const now = expectOk(
          await c.unary(
            m.checkPermission,
            { userId: ADMIN, permission: "CAN_MANAGE_USERS", fullyConsistent: true },
            auth,
          ),
        ) as {
          checkedAt: string;
        };
        const stream = c.stream(m.watchChanges, { after: now.checkedAt }, auth);
        try {
          const user = randomUUID();
          expectOk(
            await c.unary(m.assignRole, { userId: user, role: "Viewer" }, { authorization: admin.rs256 }),
          );
          const change = await stream.next();
          expect(change).toMatchObject({ message: { kind: "CHANGE_KIND_USER_ROLES", userId: user } });
        } finally {
          stream.close();
        }
      });

      it("is refused every write, and nothing is written", async () => {
        const user = randomUUID();
        for (const token of SERVICE_TOKENS) {
          const auth = { authorization: `bearer ${token}` };
          expectStatus(
            await c.unary(m.assignRole, { userId: user, role: "Viewer" }, auth),
            S.PERMISSION_DENIED,
            DENIED_WRITE("AssignRole"),
          );
          expectStatus(
            await c.unary(m.revokeRole, { userId: ADMIN, role: "Admin" }, auth),
            S.PERMISSION_DENIED,
            DENIED_WRITE("RevokeRole"),
          );
          expectStatus(
            await c.unary(m.setUserRoles, { userId: user, roles: ["Admin"] }, auth),
            S.PERMISSION_DENIED,
            DENIED_WRITE("SetUserRoles"),
          );
          expectStatus(
            await c.unary(m.updateProfile, { userId: user, name: "svc" }, auth),
            S.PERMISSION_DENIED,
            DENIED_WRITE("UpdateProfile"),
          );
        }
        expect(await roleNames(user)).toEqual([]);
        expect(await roleNames(ADMIN)).toEqual(["Admin"]);
        expect(await audit(user)).toEqual([]);
        expect(await sql("SELECT name FROM user_profile WHERE user_id = ?", [user])).toEqual([]);
      });
    });
  });

  describe("public endpoints need no credentials", () => {
    it("grpc.health.v1 Check answers SERVING for the server and the service", async () => {
      const c = createGrpcClient(t.grpcTarget);
      try {
        for (const service of ["", AuthzService.typeName]) {
          expect(await c.unary(Health.method.check, { service })).toEqual({
            code: S.OK,
            message: "",
            body: { status: "SERVING" },
          });
        }
      } finally {
        c.close();
      }
    });

    it("GET /healthz and /readyz answer 200", async () => {
      expect((await rawRequest(`${t.httpBase}/healthz`, {})).status).toBe(200);
      const ready = await rawRequest(`${t.httpBase}/readyz`, {});
      expect({ status: ready.status, body: ready.body.toString() }).toEqual({ status: 200, body: "ready\n" });
    });

    it("reflection lists the services through buf curl; the service itself still needs a credential", async () => {
      const curl = (...args: string[]) =>
        run(BUF, ["curl", "--protocol", "grpc", "--http2-prior-knowledge", ...args], { timeout: 20_000 });
      const { stdout } = await curl("--list-services", `http://${t.grpcTarget}`);
      expect(stdout.trim().split("\n").sort()).toEqual([
        "envoy.service.auth.v3.Authorization",
        "flip.authz.v1.AuthzService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
      ]);
      const url = `http://${t.grpcTarget}/flip.authz.v1.AuthzService/GetProfile`;
      const body = JSON.stringify({ userId: ADMIN });
      const refused = await curl("-d", body, url).then(
        () => "succeeded",
        (error: { stderr: string }) => error.stderr,
      );
      expect(refused).toContain("unauthenticated");
      expect(refused).toContain("missing credentials");
      const { stdout: answer } = await curl(
        "-H",
        `Authorization: Bearer ${SERVICE_TOKENS[1]}`,
        "-d",
        body,
        url,
      );
      expect(JSON.parse(answer)).toMatchObject({ profile: { userId: ADMIN, roles: ["Admin"] } });
    });
  });

  describe("the other protocols of the HTTP listener apply the same rules", () => {
    it.each(["grpc-web", "connect binary"] as const)("%s", async (protocol) => {
      const options = { baseUrl: t.httpBase, httpVersion: "1.1" as const };
      const transport =
        protocol === "grpc-web"
          ? createGrpcWebTransport(options)
          : createConnectTransport({ ...options, useBinaryFormat: true });
      const client = createClient(AuthzService, transport);
      const failure = (promise: Promise<unknown>) =>
        promise.then(
          () => "succeeded",
          (error: unknown) => {
            const connectError = ConnectError.from(error);
            return `${Code[connectError.code]}: ${connectError.rawMessage}`;
          },
        );
      expect(await failure(client.listRoles({}))).toBe("Unauthenticated: missing credentials");
      expect(
        await failure(
          client.listRoles({}, { headers: { authorization: bearer("not-a-jwt-at-all-0123456789") } }),
        ),
      ).toBe("Unauthenticated: invalid token: malformed token");
      expect(
        await failure(
          client.assignRole(
            { userId: randomUUID(), role: "Admin" },
            { headers: { authorization: researcher } },
          ),
        ),
      ).toBe("PermissionDenied: AssignRole needs CAN_MANAGE_USERS");
      const profile = await client.getProfile(
        { userId: RESEARCHER },
        { headers: { authorization: researcher } },
      );
      expect(profile.profile?.roles).toEqual(["Researcher"]);
      const user = randomUUID();
      const written = await client.assignRole(
        { userId: user, role: "Viewer" },
        { headers: { authorization: admin.es256 } },
      );
      expect(written.roles).toEqual(["Viewer"]);
      expect(await audit(user)).toEqual([{ action: "Assigned role Viewer", modified_by_user_id: ADMIN }]);
    });
  });

  describe("the log", () => {
    it("was written at trace level and never holds a credential (last: after every call above)", () => {
      expect(t.logs.some((line) => line.includes('"flip-authz listening"'))).toBe(true);
      expect(t.logs.some((line) => line.includes('"auth":"secured"'))).toBe(true);
      const log = t.logs.join("");
      expect(sent.size).toBeGreaterThan(20);
      for (const credential of sent) {
        expect(log).not.toContain(credential);
        for (const part of credential.split(".")) if (part.length > 16) expect(log).not.toContain(part);
      }
    });
  });
});
