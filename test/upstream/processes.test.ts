// The issue's real-process scenarios: an upstream `flip-authz serve` on PostgreSQL and two follower
// processes, frozen (SIGSTOP), restarted, pruned under them; callers with service tokens and user JWTs on
// the followers' own listeners; PostgreSQL's own view of who is connected.

import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthzService } from "../../gen/flip/authz/v1/authz_pb.ts";
import { type AppDatabase, createPostgresDatabase, eventually } from "../helpers/app.ts";
import { createTestPki } from "../helpers/certs.ts";
import { handledCalls, readiness } from "../helpers/follower.ts";
import { CLIENT_ID, ISSUER, signAccessToken } from "../helpers/keys.ts";
import { postgresAvailable } from "../helpers/postgres.ts";
import {
  createConnectClient,
  createGrpcClient,
  createTestPool,
  type ListenerClient,
  S,
  type TestPool,
} from "../helpers/secure-app.ts";
import { type ServeProcess, startServe, stopAll, tcpPortsOf } from "../helpers/serve-process.ts";

const m = AuthzService.method;
const UPSTREAM_TOKEN = "sidecar-upstream-token-0001";
const CALLER_TOKEN = "backend-caller-token-000001";
const ADMIN_ROLE = "64d3145b-034c-4328-b637-8eb54313b7c5";
const RESEARCHER_ROLE = "10b64ed0-bc90-4c01-9cc3-933c704905c1";
const VIEWER_ROLE = "cdee79c9-a5e1-4b9e-a315-1ec2f3d29efe";
const CAN_APPROVE_PROJECTS = "e2703e64-0186-4bc1-ac40-ba4ef63255ec";
/**
 * The two followers' staleness bound: longer than an upstream restart takes on a loaded test machine (up
 * to ~8 s seen), so a restart is a blip to them. A third, hasty follower has a short one.
 */
const BOUND_MS = 30_000;
const HASTY_BOUND_MS = 2000;

const bearer = (token: string) => `Bearer ${token}`;
const service = { authorization: bearer(CALLER_TOKEN) };
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// Real processes on two shared cores: generous time for each step.
describe.skipIf(!postgresAvailable)(
  "an upstream on PostgreSQL and two follower processes",
  { timeout: 120_000 },
  () => {
    let db: AppDatabase;
    let pool: TestPool;
    let upstream: ServeProcess;
    let followers: ServeProcess[];
    let hasty: ServeProcess;
    let upstreamEnv: Record<string, string>;
    let admin: string;
    let researcher: string;
    const ADMIN = randomUUID();
    const RESEARCHER = randomUUID();
    const clients: ListenerClient[] = [];
    const grpcOf = (p: ServeProcess) => {
      const client = createGrpcClient(p.grpcTarget);
      clients.push(client);
      return client;
    };
    const allowed = async (p: ServeProcess, userId: string, permission: string, extra = {}) => {
      const answer = await grpcOf(p).unary(m.checkPermission, { userId, permission, ...extra }, service);
      if (answer.code !== S.OK) throw new Error(`${p.name}: ${answer.code} ${answer.message}`);
      return (answer.body as { allowed?: boolean }).allowed === true;
    };
    const serving = async (p: ServeProcess) => (await readiness(p.httpBase)) === "SERVING";
    const restartUpstream = async (between: () => Promise<void> = async () => {}) => {
      const { grpcPort, httpPort } = upstream;
      expect(await upstream.stop()).toBe(0);
      await between();
      upstream = await startServe(upstreamEnv, { name: "upstream", grpcPort, httpPort });
    };

    beforeAll(async () => {
      db = await createPostgresDatabase();
      pool = await createTestPool();
      const auth = {
        AUTHZ_JWT_ISSUER: ISSUER,
        AUTHZ_JWT_AUDIENCE: CLIENT_ID,
        AUTHZ_JWKS_FILE: pool.jwksFile,
      };
      upstreamEnv = {
        ...auth,
        DATABASE_URL: db.url,
        AUTHZ_SERVICE_TOKENS: `${UPSTREAM_TOKEN},${CALLER_TOKEN}`,
      };
      upstream = await startServe(upstreamEnv, { name: "upstream" });
      // FLIP's own bootstrap: plain SQL.
      await db.sql("INSERT INTO user_role (user_id, role_id) VALUES (?, ?), (?, ?)", [
        ADMIN,
        ADMIN_ROLE,
        RESEARCHER,
        RESEARCHER_ROLE,
      ]);
      const followerEnv = {
        ...auth,
        AUTHZ_UPSTREAM: upstream.grpcTarget,
        AUTHZ_UPSTREAM_TOKEN: UPSTREAM_TOKEN,
        AUTHZ_UPSTREAM_MAX_STALENESS_MS: String(BOUND_MS),
        AUTHZ_SERVICE_TOKENS: CALLER_TOKEN,
      };
      followers = await Promise.all(
        ["follower-1", "follower-2"].map((name) =>
          startServe(followerEnv, { name, ready: "flip-authz follower listening" }),
        ),
      );
      hasty = await startServe(
        { ...followerEnv, AUTHZ_UPSTREAM_MAX_STALENESS_MS: String(HASTY_BOUND_MS) },
        { name: "hasty-follower", ready: "flip-authz follower listening" },
      );
      for (const follower of [...followers, hasty]) await eventually(() => serving(follower), 15_000);
      admin = bearer(await signAccessToken(pool.rsa, ADMIN));
      researcher = bearer(await signAccessToken(pool.ec, RESEARCHER));
    });
    afterAll(async () => {
      for (const client of clients) client.close();
      await stopAll();
      await db?.close();
    });

    it("followers open no database connection: every connection PostgreSQL sees is the upstream's or this test's", async () => {
      const user = randomUUID();
      for (const follower of followers) {
        expect(await allowed(follower, user, "CAN_MANAGE_USERS")).toBe(false);
        expect(await allowed(follower, user, "CAN_MANAGE_USERS", { fullyConsistent: true })).toBe(false);
      }
      const rows = await db.sql(
        "SELECT client_port FROM pg_stat_activity WHERE datname = current_database() AND client_port IS NOT NULL",
      );
      const connected = rows.map((row) => Number(row.client_port));
      const upstreamPorts = tcpPortsOf(upstream.pid);
      // The upstream's pool and its LISTEN connection.
      expect(connected.filter((port) => upstreamPorts.has(port)).length).toBeGreaterThanOrEqual(2);
      for (const follower of [...followers, hasty]) {
        const ports = tcpPortsOf(follower.pid);
        expect(ports.size).toBeGreaterThan(0);
        expect({
          follower: follower.name,
          databaseConnections: connected.filter((port) => ports.has(port)),
        }).toEqual({
          follower: follower.name,
          databaseConnections: [],
        });
      }
    });

    it("writes through a follower are audited with the caller as actor, and refused when the caller may not write", async () => {
      const user = randomUUID();
      for (const [i, listener] of [
        grpcOf(followers[0] as ServeProcess),
        createConnectClient(followers[1]?.httpBase ?? ""),
      ].entries()) {
        clients.push(listener);
        const role = i === 0 ? "Viewer" : "Researcher";
        const written = await listener.unary(m.assignRole, { userId: user, role }, { authorization: admin });
        expect(written).toMatchObject({ code: S.OK, body: { changed: true } });
        const refused = await listener.unary(
          m.revokeRole,
          { userId: user, role },
          { authorization: researcher },
        );
        expect(refused).toMatchObject({
          code: S.PERMISSION_DENIED,
          message: "RevokeRole needs CAN_MANAGE_USERS",
        });
        const byService = await listener.unary(m.revokeRole, { userId: user, role }, service);
        expect(byService).toMatchObject({
          code: S.PERMISSION_DENIED,
          message: "service tokens may not call RevokeRole (it writes); use a user token",
        });
      }
      expect(
        await db.sql(
          "SELECT action, modified_by_user_id FROM users_audit WHERE user_id = ? ORDER BY timestamp",
          [user],
        ),
      ).toEqual([
        { action: "Assigned role Viewer", modified_by_user_id: ADMIN },
        { action: "Assigned role Researcher", modified_by_user_id: ADMIN },
      ]);
    });

    it("read-your-writes across followers: written_at from one as at_least_as_fresh on the other", async () => {
      const [one, two] = followers as [ServeProcess, ServeProcess];
      for (let i = 0; i < 5; i++) {
        const user = randomUUID();
        expect(await allowed(two, user, "CAN_CREATE_PROJECTS")).toBe(false); // now cached on two
        const written = await grpcOf(one).unary(
          m.assignRole,
          { userId: user, role: "Researcher" },
          { authorization: admin },
        );
        const writtenAt = (written.body as { writtenAt: string }).writtenAt;
        expect(await allowed(two, user, "CAN_CREATE_PROJECTS", { atLeastAsFresh: writtenAt })).toBe(true);
        const revoked = await grpcOf(two).unary(
          m.revokeRole,
          { userId: user, role: "Researcher" },
          { authorization: admin },
        );
        const revokedAt = (revoked.body as { writtenAt: string }).writtenAt;
        expect(await allowed(one, user, "CAN_CREATE_PROJECTS", { atLeastAsFresh: revokedAt })).toBe(false);
      }
    });

    it("a change made by plain SQL reaches both followers' caches", async () => {
      const user = randomUUID();
      for (const follower of followers)
        expect(await allowed(follower, user, "CAN_APPROVE_PROJECTS")).toBe(false);
      await db.sql("INSERT INTO user_role (user_id, role_id) VALUES (?, ?)", [user, VIEWER_ROLE]);
      const id = randomUUID();
      await db.sql("INSERT INTO role_permission (id, role_id, permission_id) VALUES (?, ?, ?)", [
        id,
        VIEWER_ROLE,
        CAN_APPROVE_PROJECTS,
      ]);
      try {
        for (const follower of followers)
          await eventually(() => allowed(follower, user, "CAN_APPROVE_PROJECTS"), 3000);
      } finally {
        await db.sql("DELETE FROM role_permission WHERE id = ?", [id]);
      }
      for (const follower of followers) {
        await eventually(async () => !(await allowed(follower, user, "CAN_APPROVE_PROJECTS")), 3000);
      }
    });

    it("a follower frozen (SIGSTOP) in a forwarded WatchChanges: the upstream ends it at the caller's deadline", async () => {
      // The follower cannot cancel while frozen, so only the deadline it passed on can end the upstream's
      // stream: the caller's, which travelled with the call.
      const follower = followers[0] as ServeProcess;
      const c = grpcOf(follower);
      const user = randomUUID();
      const first = await c.unary(m.assignRole, { userId: user, role: "Viewer" }, { authorization: admin });
      const from = (first.body as { writtenAt: string }).writtenAt;
      const watch = c.stream(m.watchChanges, { after: from }, { authorization: admin, timeoutMs: 4000 });
      try {
        await c.unary(m.updateProfile, { userId: user, name: "W" }, { authorization: admin });
        expect(await watch.next(3000)).toMatchObject({
          message: { kind: "CHANGE_KIND_PROFILE", userId: user },
        });
        const before = await handledCalls(upstream.httpBase, "WatchChanges", "DeadlineExceeded");
        follower.signal("SIGSTOP");
        try {
          await eventually(
            async () => (await handledCalls(upstream.httpBase, "WatchChanges", "DeadlineExceeded")) > before,
            8000,
          );
        } finally {
          follower.signal("SIGCONT");
        }
        expect(await watch.next(5000)).toMatchObject({ end: { code: S.DEADLINE_EXCEEDED } });
      } finally {
        watch.close();
      }
      expect(await serving(follower)).toBe(true);
    });

    it("the upstream frozen (SIGSTOP): within the bound, cached checks answered and SERVING; past it, NOT_SERVING and no stale answer; back by itself", async () => {
      const user = randomUUID();
      await db.sql("INSERT INTO user_role (user_id, role_id) VALUES (?, ?)", [user, ADMIN_ROLE]);
      // Cached once each follower has applied the insert: a fill that races the change it reflects is
      // answered but not kept.
      const [row] = await db.sql("SELECT revision::text AS revision FROM authz_revision");
      for (const follower of [...followers, hasty]) {
        const atLeastAsFresh = String(row?.revision);
        expect(await allowed(follower, user, "CAN_MANAGE_USERS", { atLeastAsFresh })).toBe(true);
        expect(await allowed(follower, user, "CAN_MANAGE_USERS")).toBe(true);
      }
      upstream.signal("SIGSTOP");
      const frozenAt = Date.now();
      try {
        // The hasty follower's bound passes: it stops answering from memory and says so.
        await eventually(async () => !(await serving(hasty)), HASTY_BOUND_MS + 5000);
        expect(hasty.messages()).toContain(
          "no word from the upstream within AUTHZ_UPSTREAM_MAX_STALENESS_MS: caches flushed, answering by asking the upstream, NOT_SERVING until caught up",
        );
        // Meanwhile the database changed: a cached answer would be stale now. The hasty follower asks the
        // frozen upstream and fails; the others are within their bound and answer from memory.
        await db.sql("DELETE FROM user_role WHERE user_id = ?", [user]);
        const answer = await grpcOf(hasty).unary(
          m.checkPermission,
          { userId: user, permission: "CAN_MANAGE_USERS" },
          { ...service, timeoutMs: 1000 },
        );
        expect([S.UNAVAILABLE, S.DEADLINE_EXCEEDED]).toContain(answer.code);
        while (Date.now() - frozenAt < HASTY_BOUND_MS + 2000) await sleep(100);
        for (const follower of followers) {
          expect(await allowed(follower, user, "CAN_MANAGE_USERS")).toBe(true);
          expect(await serving(follower)).toBe(true);
        }
      } finally {
        upstream.signal("SIGCONT");
      }
      for (const follower of [...followers, hasty]) {
        await eventually(async () => !(await allowed(follower, user, "CAN_MANAGE_USERS")), 15_000);
        await eventually(() => serving(follower), 15_000);
      }
      expect(hasty.messages()).toContain("caught up with the upstream: serving from the caches again");
      for (const follower of followers) {
        expect(follower.messages()).not.toContain(
          "caught up with the upstream: serving from the caches again",
        );
      }
    });

    it("the upstream restarted with a change committed while it was down: no follower misses it, SERVING throughout", async () => {
      const user = randomUUID();
      for (const follower of followers) expect(await allowed(follower, user, "CAN_MANAGE_USERS")).toBe(false);
      const health: boolean[] = [];
      const watching = setInterval(() => {
        for (const follower of followers) void serving(follower).then((up) => health.push(up));
      }, 100);
      const started = Date.now();
      try {
        await restartUpstream(async () => {
          await db.sql("INSERT INTO user_role (user_id, role_id) VALUES (?, ?)", [user, ADMIN_ROLE]);
        });
      } finally {
        clearInterval(watching);
      }
      const downMs = Date.now() - started;
      for (const follower of followers)
        await eventually(() => allowed(follower, user, "CAN_MANAGE_USERS"), 10_000);
      // The restart took less than the bound, so nobody noticed.
      expect(downMs).toBeLessThan(BOUND_MS - 5000);
      expect(health.length).toBeGreaterThan(5);
      expect(health.every((up) => up)).toBe(true);
    });

    it("the upstream no longer keeps a follower's revision: the follower resyncs from scratch", async () => {
      const user = randomUUID();
      for (const follower of followers) expect(await allowed(follower, user, "CAN_MANAGE_USERS")).toBe(false);
      await restartUpstream(async () => {
        // While the upstream is away: a change for the user, then one more, and retention removes all but
        // the newest, so the followers' next revision is gone from the log.
        await db.sql("INSERT INTO user_role (user_id, role_id) VALUES (?, ?)", [user, ADMIN_ROLE]);
        await db.sql("UPDATE roles SET description = description WHERE id = ?", [VIEWER_ROLE]);
        await db.sql("INSERT INTO user_role (user_id, role_id) VALUES (?, ?)", [randomUUID(), VIEWER_ROLE]);
        await db.sql(
          "DELETE FROM authz_change_log WHERE revision < (SELECT max(revision) FROM authz_change_log)",
        );
      });
      for (const follower of followers) {
        await eventually(() => allowed(follower, user, "CAN_MANAGE_USERS"), 10_000);
        expect(
          follower
            .messages()
            .some((message) => message.includes("no longer keeps the revision this follower applied last")),
        ).toBe(true);
        await eventually(() => serving(follower), 10_000);
      }
    });

    it("an upstream that wants mutual TLS: a follower with a client certificate syncs, one without is refused and says so", async () => {
      const pki = createTestPki();
      const tlsUpstream = await startServe(
        {
          ...upstreamEnv,
          AUTHZ_TLS_CERT_FILE: pki.server.cert,
          AUTHZ_TLS_KEY_FILE: pki.server.key,
          AUTHZ_TLS_CLIENT_CA_FILE: pki.ca.cert,
        },
        { name: "upstream-mtls", https: true },
      );
      const common = {
        AUTHZ_UPSTREAM: `https://localhost:${tlsUpstream.grpcPort}`,
        AUTHZ_UPSTREAM_TOKEN: UPSTREAM_TOKEN,
        AUTHZ_UPSTREAM_CA_FILE: pki.ca.cert,
        AUTHZ_SERVICE_TOKENS: CALLER_TOKEN,
      };
      const withCert = await startServe(
        { ...common, AUTHZ_UPSTREAM_CERT_FILE: pki.client.cert, AUTHZ_UPSTREAM_KEY_FILE: pki.client.key },
        { name: "follower-mtls", ready: "flip-authz follower listening" },
      );
      const without = await startServe(common, {
        name: "follower-no-cert",
        ready: "flip-authz follower listening",
      });
      try {
        await eventually(() => serving(withCert), 15_000);
        expect(await allowed(withCert, ADMIN, "CAN_MANAGE_USERS")).toBe(true);
        await eventually(
          async () =>
            without
              .messages()
              .some((message) =>
                message.startsWith(`the upstream at localhost:${tlsUpstream.grpcPort} cannot be reached`),
              ),
          10_000,
        );
        expect(await serving(without)).toBe(false);
      } finally {
        await Promise.all([withCert.stop(), without.stop(), tlsUpstream.stop()]);
      }
    });
  },
);
