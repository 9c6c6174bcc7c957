// Followers (SIDECARS.md §5) in this process, over a real upstream on a SQLite file with service tokens and
// JWTs: what they answer from their caches, what they forward (with the caller's own credentials and
// deadline, answers passed through), read-your-writes across followers. Faults are in faults.test.ts; the
// same with real processes on PostgreSQL in processes.test.ts.

import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthzService } from "../../gen/flip/authz/v1/authz_pb.ts";
import { NIL_UUID } from "../../src/authz/ids.ts";
import { type AppDatabase, createSqliteDatabase, eventually } from "../helpers/app.ts";
import { handledCalls, readiness, startTestFollower, type TestFollower } from "../helpers/follower.ts";
import { CLIENT_ID, ISSUER, signAccessToken } from "../helpers/keys.ts";
import {
  createConnectClient,
  createGrpcClient,
  createTestPool,
  type ListenerClient,
  S,
  type SecureApp,
  startSecureApp,
  type TestPool,
} from "../helpers/secure-app.ts";

const m = AuthzService.method;
const UPSTREAM_TOKEN = "follower-token-0123456789";
const CALLER_TOKEN = "backend-service-token-0123";
const ADMIN = randomUUID();
const RESEARCHER = randomUUID();
const VIEWER_ID = "cdee79c9-a5e1-4b9e-a315-1ec2f3d29efe";
const CAN_MANAGE_PROJECTS_ID = "fc2f242e-848f-4983-ab14-fd3c5604535d";

const bearer = (token: string) => `Bearer ${token}`;

describe("followers over a real upstream", () => {
  let db: AppDatabase;
  let pool: TestPool;
  let upstream: SecureApp;
  let a: TestFollower;
  let b: TestFollower;
  let admin: string;
  let researcher: string;
  const clients: ListenerClient[] = [];
  /** A client of a follower's listener ("grpc" or "connect"). */
  const on = (follower: TestFollower, listener: "grpc" | "connect") => {
    const client =
      listener === "grpc" ? createGrpcClient(follower.grpcTarget) : createConnectClient(follower.httpBase);
    clients.push(client);
    return client;
  };
  const service = { authorization: bearer(CALLER_TOKEN) };

  beforeAll(async () => {
    db = await createSqliteDatabase();
    pool = await createTestPool();
    const auth = {
      AUTHZ_JWT_ISSUER: ISSUER,
      AUTHZ_JWT_AUDIENCE: CLIENT_ID,
      AUTHZ_JWKS_FILE: pool.jwksFile,
    };
    upstream = await startSecureApp(db.url, {
      ...auth,
      AUTHZ_SERVICE_TOKENS: `${UPSTREAM_TOKEN},${CALLER_TOKEN}`,
      AUTHZ_LOG_LEVEL: "silent",
    });
    await upstream.app.authz.assignRole(ADMIN, "Admin", NIL_UUID);
    await upstream.app.authz.assignRole(RESEARCHER, "Researcher", NIL_UUID);
    // The followers know their own callers (the backend's service token, users' JWTs); their upstream
    // token is theirs alone.
    const followerEnv = { ...auth, AUTHZ_SERVICE_TOKENS: CALLER_TOKEN, AUTHZ_UPSTREAM_TOKEN: UPSTREAM_TOKEN };
    [a, b] = await Promise.all([
      startTestFollower(upstream.grpcTarget, followerEnv),
      startTestFollower(upstream.grpcTarget, followerEnv),
    ]);
    admin = bearer(await signAccessToken(pool.rsa, ADMIN));
    researcher = bearer(await signAccessToken(pool.ec, RESEARCHER));
    for (const follower of [a, b])
      await eventually(async () => (await readiness(follower.httpBase)) === "SERVING", 10_000);
  });
  afterAll(async () => {
    for (const client of clients) client.close();
    await Promise.all([a?.close(), b?.close()]);
    await upstream?.close();
    await db?.close();
  });

  it("answers repeated checks, profiles and lists from its caches: no call reaches the upstream", async () => {
    const c = on(a, "grpc");
    const user = randomUUID();
    await upstream.app.authz.assignRole(user, "Researcher", NIL_UUID);
    await upstream.app.authz.updateProfile(user, { name: "Ada" }, NIL_UUID);
    const ask = async () => {
      const check = await c.unary(
        m.checkPermission,
        { userId: user, permission: "CAN_CREATE_PROJECTS" },
        service,
      );
      const profile = await c.unary(m.getProfile, { userId: user }, service);
      const roles = await c.unary(m.listRoles, {}, service);
      return { check, profile, roles };
    };
    // Once the follower has applied the writes, a first round fills its caches (a fill that races the
    // change it reflects is answered, not kept).
    expect(await a.app.reader.waitFor(await upstream.app.store.currentRevision(), 5000)).toBe(true);
    await ask();
    const counted = ["CheckPermission", "GetProfile", "ListRoles"];
    const before = await Promise.all(counted.map((method) => handledCalls(upstream.httpBase, method)));
    for (let i = 0; i < 20; i++) {
      const { check, profile, roles } = await ask();
      expect(check.body).toMatchObject({ allowed: true, grantedBy: ["Researcher"] });
      expect(profile.body).toMatchObject({ profile: { name: "Ada", roles: ["Researcher"] } });
      expect((roles.body as { roles: unknown[] }).roles).toHaveLength(3);
    }
    expect(await Promise.all(counted.map((method) => handledCalls(upstream.httpBase, method)))).toEqual(
      before,
    );
  });

  it("answers reads exactly as the upstream does, on both listeners", async () => {
    const user = randomUUID();
    await upstream.app.authz.setUserRoles(user, ["Researcher", "Viewer"], NIL_UUID);
    const written = await upstream.app.authz.updateProfile(user, { organisation: "KCL" }, NIL_UUID);
    const direct = createGrpcClient(upstream.grpcTarget);
    clients.push(direct);
    const calls = [
      [
        m.checkPermission,
        { userId: user, permission: "can_create_projects", atLeastAsFresh: written.revision },
      ],
      [m.getProfile, { userId: user.toUpperCase(), atLeastAsFresh: written.revision }],
      [m.listPermissions, { atLeastAsFresh: written.revision }],
      [m.checkPermission, { userId: user, permission: "CAN_FLY" }],
      [m.getProfile, { userId: randomUUID().replace(/./, "x") }],
    ] as const;
    for (const listener of ["grpc", "connect"] as const) {
      const c = on(a, listener);
      for (const [method, input] of calls) {
        const mine = await c.unary(method as typeof m.checkPermission, input as never, service);
        const theirs = await direct.unary(method as typeof m.checkPermission, input as never, service);
        // Revisions may differ by what each has applied; everything else is the same.
        const strip = (body: unknown) =>
          JSON.parse(JSON.stringify(body ?? null).replace(/"(checkedAt|readAt)":"\d+"/g, '"$1":"R"'));
        expect({
          listener,
          method: method.name,
          code: mine.code,
          message: mine.message,
          body: strip(mine.body),
        }).toEqual({
          listener,
          method: method.name,
          code: theirs.code,
          message: theirs.message,
          body: strip(theirs.body),
        });
      }
    }
  });

  it("forwards writes with the caller's own credentials: the caller is the audited actor", async () => {
    for (const listener of ["grpc", "connect"] as const) {
      const c = on(a, listener);
      const user = randomUUID();
      const assigned = await c.unary(
        m.assignRole,
        { userId: user, role: "viewer" },
        { authorization: admin },
      );
      expect(assigned).toMatchObject({ code: S.OK, body: { changed: true, roles: ["Viewer"] } });
      const profile = await c.unary(
        m.updateProfile,
        { userId: user, name: "Grace" },
        { authorization: admin },
      );
      expect(profile).toMatchObject({ code: S.OK, body: { profile: { name: "Grace" } } });
      expect(String((profile.body as { writtenAt: string }).writtenAt)).toMatch(/^\d+$/);
      const rows = await db.sql(
        'SELECT action, modified_by_user_id FROM users_audit WHERE user_id = ? ORDER BY "timestamp", id',
        [user],
      );
      expect(rows).toEqual([
        { action: "Assigned role Viewer", modified_by_user_id: ADMIN },
        { action: "Updated user profile", modified_by_user_id: ADMIN },
      ]);
      const audit = await c.unary(m.listAuditEvents, { userId: user }, { authorization: admin });
      expect((audit.body as { events: { action: string }[] }).events.map((e) => e.action)).toEqual([
        "Updated user profile",
        "Assigned role Viewer",
      ]);
    }
  });

  it("passes the upstream's refusals through unchanged, and its own token is no credential for callers", async () => {
    const direct = createGrpcClient(upstream.grpcTarget);
    clients.push(direct);
    const user = randomUUID();
    type Unary = typeof m.assignRole;
    const refused: [string, Unary, object, string | undefined][] = [
      ["a researcher may not write", m.assignRole, { userId: user, role: "Admin" }, researcher],
      ["no credentials", m.assignRole, { userId: user, role: "Admin" }, undefined],
      [
        "a service may not write",
        m.setUserRoles as unknown as Unary,
        { userId: user, roles: [] },
        service.authorization,
      ],
      ["bad input", m.assignRole, { userId: "nope", role: "Admin" }, admin],
      ["unknown role", m.revokeRole as unknown as Unary, { userId: user, role: "Pilot" }, admin],
      [
        "the follower's upstream token",
        m.assignRole,
        { userId: user, role: "Admin" },
        bearer(UPSTREAM_TOKEN),
      ],
    ];
    for (const listener of ["grpc", "connect"] as const) {
      const c = on(b, listener);
      for (const [why, method, input, authorization] of refused) {
        const options = authorization === undefined ? {} : { authorization };
        const mine = await c.unary(method, input as never, options);
        const theirs = await direct.unary(method, input as never, options);
        expect(theirs.code).not.toBe(S.OK);
        expect({ why, listener, code: mine.code, message: mine.message }).toEqual({
          why,
          listener,
          code: theirs.code,
          message: theirs.message,
        });
      }
      // Reads are the follower's own: its callers' credentials, not its upstream token.
      const read = await c.unary(m.listRoles, {}, { authorization: bearer(UPSTREAM_TOKEN) });
      expect(read).toMatchObject({ code: S.UNAUTHENTICATED, message: "invalid token: malformed token" });
    }
    expect(await db.sql("SELECT * FROM user_role WHERE user_id = ?", [user])).toEqual([]);
  });

  it("read-your-writes across followers: a write through one, at_least_as_fresh = written_at on the other", async () => {
    const ca = on(a, "grpc");
    const cb = on(b, "connect");
    for (let i = 0; i < 5; i++) {
      const user = randomUUID();
      // b has cached the user with no roles.
      expect(
        (await cb.unary(m.checkPermission, { userId: user, permission: "CAN_CREATE_PROJECTS" }, service))
          .body,
      ).toMatchObject({ checkedAt: expect.stringMatching(/^\d+$/) });
      const written = await ca.unary(
        m.assignRole,
        { userId: user, role: "Researcher" },
        { authorization: admin },
      );
      const writtenAt = (written.body as { writtenAt: string }).writtenAt;
      const fresh = await cb.unary(
        m.checkPermission,
        { userId: user, permission: "CAN_CREATE_PROJECTS", atLeastAsFresh: writtenAt },
        service,
      );
      expect(fresh.body).toMatchObject({ allowed: true, grantedBy: ["Researcher"] });
      expect(BigInt((fresh.body as { checkedAt: string }).checkedAt)).toBeGreaterThanOrEqual(
        BigInt(writtenAt),
      );
      const named = await ca.unary(
        m.updateProfile,
        { userId: user, name: `n${i}` },
        { authorization: admin },
      );
      const profile = await cb.unary(
        m.getProfile,
        { userId: user, atLeastAsFresh: (named.body as { writtenAt: string }).writtenAt },
        service,
      );
      expect(profile.body).toMatchObject({ profile: { name: `n${i}`, roles: ["Researcher"] } });
    }
  });

  it("refuses an at_least_as_fresh that has not been written, naming the field, as the upstream does", async () => {
    const c = on(a, "grpc");
    const latest = BigInt(((await c.unary(m.listRoles, {}, service)).body as { readAt: string }).readAt);
    const future = (latest + 1_000_000n).toString();
    const check = await c.unary(
      m.checkPermissions,
      {
        checks: [
          { userId: ADMIN, permission: "CAN_MANAGE_USERS" },
          { userId: ADMIN, permission: "CAN_MANAGE_USERS", atLeastAsFresh: future },
        ],
      },
      service,
    );
    expect(check.code).toBe(S.INVALID_ARGUMENT);
    expect(check.message).toMatch(
      new RegExp(`^checks\\[1\\]\\.at_least_as_fresh: revision ${future} has not been written`),
    );
    const roles = await c.unary(m.listRoles, { atLeastAsFresh: future }, service);
    expect(roles.code).toBe(S.INVALID_ARGUMENT);
    expect(roles.message).toMatch(new RegExp(`^at_least_as_fresh: revision ${future} has not been written`));
  });

  it("fully_consistent asks the upstream: it sees a plain-SQL insert at once, and so do cached checks soon after", async () => {
    const c = on(b, "grpc");
    const user = randomUUID();
    const ask = (fullyConsistent: boolean) =>
      c.unary(m.checkPermission, { userId: user, permission: "CAN_MANAGE_USERS", fullyConsistent }, service);
    expect((await ask(false)).body).not.toHaveProperty("allowed");
    await db.sql("INSERT INTO user_role (user_id, role_id) VALUES (?, ?)", [
      user,
      "64d3145b-034c-4328-b637-8eb54313b7c5",
    ]);
    expect((await ask(true)).body).toMatchObject({ allowed: true, grantedBy: ["Admin"] });
    await eventually(async () => ((await ask(false)).body as { allowed?: boolean }).allowed === true, 5000);
  });

  it("a plain-SQL change to a role's permissions reaches both followers' caches and ListRoles", async () => {
    const user = randomUUID();
    await upstream.app.authz.assignRole(user, "Viewer", NIL_UUID);
    const id = randomUUID();
    await db.sql("INSERT INTO role_permission (id, role_id, permission_id) VALUES (?, ?, ?)", [
      id,
      VIEWER_ID,
      CAN_MANAGE_PROJECTS_ID,
    ]);
    try {
      for (const follower of [a, b]) {
        const c = on(follower, "grpc");
        await eventually(async () => {
          const answer = await c.unary(
            m.checkPermission,
            { userId: user, permission: "CAN_MANAGE_PROJECTS" },
            service,
          );
          return (answer.body as { allowed?: boolean }).allowed === true;
        }, 5000);
        const roles = (await c.unary(m.listRoles, {}, service)).body as {
          roles: { name: string; permissions?: string[] }[];
        };
        expect(roles.roles.find((role) => role.name === "Viewer")?.permissions).toEqual([
          "CAN_MANAGE_PROJECTS",
        ]);
      }
    } finally {
      await db.sql("DELETE FROM role_permission WHERE id = ?", [id]);
    }
  });

  it("forwards WatchChanges with the caller's credentials and deadline", async () => {
    const c = on(a, "grpc");
    const user = randomUUID();
    const first = await c.unary(m.assignRole, { userId: user, role: "Viewer" }, { authorization: admin });
    const from = (first.body as { writtenAt: string }).writtenAt;
    const watch = c.stream(m.watchChanges, { after: from }, { authorization: admin, timeoutMs: 1500 });
    await c.unary(m.updateProfile, { userId: user, name: "W" }, { authorization: admin });
    const next = await watch.next(5000);
    expect(next).toMatchObject({ message: { kind: "CHANGE_KIND_PROFILE", userId: user } });
    const ended = () =>
      Promise.all(
        ["DeadlineExceeded", "Canceled"].map((code) => handledCalls(upstream.httpBase, "WatchChanges", code)),
      ).then(([deadline = 0, cancel = 0]) => deadline + cancel);
    const before = await ended();
    const end = await watch.next(5000);
    expect(end).toMatchObject({ end: { code: S.DEADLINE_EXCEEDED } });
    // The upstream's stream ends too: by the deadline it was given or by the follower's cancel, whichever
    // comes first in this one process (test/upstream/processes.test.ts freezes a follower to see the
    // deadline alone end it).
    await eventually(async () => (await ended()) > before, 5000);
    watch.close();
    const refused = c.stream(m.watchChanges, { after: from }, { authorization: researcher });
    expect(await refused.next(5000)).toMatchObject({
      end: { code: S.PERMISSION_DENIED, message: "WatchChanges needs CAN_MANAGE_USERS" },
    });
    refused.close();
  });
});
