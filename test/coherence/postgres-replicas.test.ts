// Cache coherence across replicas and other writers, on real processes: two `flip-authz serve` processes
// (A and B) on one PostgreSQL database, called through real grpc-js clients, while FLIP's Python API is
// played by a plain pg connection writing the same tables. Every answer a replica gives must reflect a
// change at once when asked with at_least_as_fresh, and promptly (LISTEN, not the heartbeat) when not,
// whoever wrote it.

import { randomBytes, randomUUID } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ChangeKind, type WatchChangesResponse } from "../../gen/flip/authz/v1/authz_pb.ts";
import { take } from "../helpers/app.ts";
import { createTestDatabase, postgresAvailable, type TestDatabase } from "../helpers/postgres.ts";
import {
  CAN_APPROVE_PROJECTS_ID,
  checkOutcome,
  m,
  RESEARCHER_ID,
  type Replica,
  reflected,
  sleep,
  startReplica,
  VIEWER_ID,
} from "./replicas.ts";

/**
 * How soon a plain (cached) check must reflect a change committed anywhere. Not a latency target (that is
 * measured in bench/, p99 a few ms): it is well under the feed's 5 s heartbeat, so it tells a change the
 * LISTEN feed delivered from one a heartbeat caught up, yet leaves room for a machine the whole suite loads
 * (up to ~450 ms was seen at load 15).
 */
const PROPAGATION_MS = 2000;

const rev = (value: string) => {
  expect(value).toMatch(/^\d+$/);
  return Number(value);
};

const change = (message: WatchChangesResponse) => ({
  revision: message.revision,
  kind: message.kind,
  userId: message.userId,
});

/**
 * Reads a stream until `count` messages arrived (or `timeoutMs` passed), then 300 ms more to catch any
 * message too many; cancels it and resolves to everything received.
 */
function takeAll(
  stream: grpc.ClientReadableStream<WatchChangesResponse>,
  count: number,
  timeoutMs: number,
): Promise<{ messages: WatchChangesResponse[]; error?: grpc.StatusObject }> {
  return new Promise((resolve) => {
    const messages: WatchChangesResponse[] = [];
    let error: grpc.StatusObject | undefined;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      stream.cancel();
      resolve(error ? { messages, error } : { messages });
    };
    const timer = setTimeout(finish, timeoutMs);
    stream.on("data", (message: WatchChangesResponse) => {
      messages.push(message);
      if (messages.length === count) setTimeout(finish, 300);
    });
    stream.on("error", (e: grpc.ServiceError) => {
      if (!done) error = e;
      finish();
    });
  });
}

describe.skipIf(!postgresAvailable)("coherence: two replicas (real processes) on one PostgreSQL", () => {
  let db: TestDatabase;
  let a: Replica;
  let b: Replica;
  let flip: pg.Client; // FLIP's Python API: plain SQL on its own connection
  const replicas = () => [a, b];

  beforeAll(async () => {
    db = await createTestDatabase("authz_coherence");
    // Started together on a fresh database: both migrate, under the migration lock.
    const started = await Promise.allSettled([startReplica("A", db.url), startReplica("B", db.url)]);
    // afterAll stops whichever started (a?.stop()).
    [a, b] = started.map((result) => (result.status === "fulfilled" ? result.value : undefined)) as [
      Replica,
      Replica,
    ];
    // One failed: stop the other too, so no server process outlives the suite.
    const failed = started.find((result) => result.status === "rejected");
    if (failed) throw failed.reason;
    flip = new pg.Client({ connectionString: db.url });
    flip.on("error", () => {});
    await flip.connect();
  }, 90_000);
  afterAll(async () => {
    const codes = await Promise.all([a?.stop(), b?.stop()]);
    await flip?.end().catch(() => {});
    await db?.drop();
    expect(codes).toEqual([0, 0]);
  });

  const sql = (text: string, params: unknown[] = []) => flip.query(text, params);
  /** Commits `text` and returns the moment the commit was acknowledged. */
  const commit = async (text: string, params: unknown[] = []) => {
    await sql(text, params);
    return performance.now();
  };

  it("AssignRole on A: B reflects it on the first call with at_least_as_fresh, and promptly (LISTEN, not the heartbeat) without", async () => {
    const fresh = randomUUID();
    const plain = randomUUID();
    // B has both users cached (no roles) before A writes.
    for (const user of [fresh, plain])
      expect(await checkOutcome(b, user, "CAN_CREATE_PROJECTS")).toBe("denied");

    const assigned = await a.client.call(m.assignRole, { userId: fresh, role: "Researcher" });
    expect(assigned.changed).toBe(true);
    const answer = await b.client.call(m.checkPermission, {
      userId: fresh,
      permission: "CAN_CREATE_PROJECTS",
      atLeastAsFresh: assigned.writtenAt,
    });
    expect(answer.allowed).toBe(true);
    expect(answer.grantedBy).toEqual(["Researcher"]);
    expect(rev(answer.checkedAt)).toBeGreaterThanOrEqual(rev(assigned.writtenAt));

    await a.client.call(m.assignRole, { userId: plain, role: "Researcher" });
    const since = performance.now();
    expect(await reflected(b, plain, "CAN_CREATE_PROJECTS", "allowed", since)).toBeLessThan(PROPAGATION_MS);
  });

  it("RevokeRole on A: B reflects it on the first call with at_least_as_fresh, and promptly (LISTEN, not the heartbeat) without", async () => {
    const fresh = randomUUID();
    const plain = randomUUID();
    for (const user of [fresh, plain]) {
      await a.client.call(m.assignRole, { userId: user, role: "Researcher" });
      await reflected(b, user, "CAN_CREATE_PROJECTS", "allowed", performance.now(), { holdMs: 0 });
    }

    const revoked = await a.client.call(m.revokeRole, { userId: fresh, role: "Researcher" });
    expect(revoked).toMatchObject({ changed: true, roles: [] });
    const answer = await b.client.call(m.checkPermission, {
      userId: fresh,
      permission: "CAN_CREATE_PROJECTS",
      atLeastAsFresh: revoked.writtenAt,
    });
    expect(answer.allowed).toBe(false);
    expect(answer.grantedBy).toEqual([]);
    expect(rev(answer.checkedAt)).toBeGreaterThanOrEqual(rev(revoked.writtenAt));

    await a.client.call(m.revokeRole, { userId: plain, role: "Researcher" });
    const since = performance.now();
    expect(await reflected(b, plain, "CAN_CREATE_PROJECTS", "denied", since)).toBeLessThan(PROPAGATION_MS);
  });

  it("plain-SQL INSERT and DELETE on user_role reach every replica promptly (LISTEN, not the heartbeat)", async () => {
    const user = randomUUID();
    for (const r of replicas()) expect(await checkOutcome(r, user, "CAN_CREATE_PROJECTS")).toBe("denied");

    let since = await commit("INSERT INTO user_role (user_id, role_id) VALUES ($1, $2)", [
      user,
      RESEARCHER_ID,
    ]);
    for (const ms of await Promise.all(
      replicas().map((r) => reflected(r, user, "CAN_CREATE_PROJECTS", "allowed", since)),
    )) {
      expect(ms).toBeLessThan(PROPAGATION_MS);
    }

    since = await commit("DELETE FROM user_role WHERE user_id = $1 AND role_id = $2", [user, RESEARCHER_ID]);
    for (const ms of await Promise.all(
      replicas().map((r) => reflected(r, user, "CAN_CREATE_PROJECTS", "denied", since)),
    )) {
      expect(ms).toBeLessThan(PROPAGATION_MS);
    }
  });

  it("a plain-SQL role_permission row (fresh uuid id) reaches every replica promptly (LISTEN, not the heartbeat), and its removal too", async () => {
    const viewer = randomUUID();
    await sql("INSERT INTO user_role (user_id, role_id) VALUES ($1, $2)", [viewer, VIEWER_ID]);
    for (const r of replicas()) {
      await reflected(r, viewer, "CAN_APPROVE_PROJECTS", "denied", performance.now(), { holdMs: 0 });
    }
    const pair = randomUUID();
    let since = await commit("INSERT INTO role_permission (id, role_id, permission_id) VALUES ($1, $2, $3)", [
      pair,
      VIEWER_ID,
      CAN_APPROVE_PROJECTS_ID,
    ]);
    for (const ms of await Promise.all(
      replicas().map((r) => reflected(r, viewer, "CAN_APPROVE_PROJECTS", "allowed", since)),
    )) {
      expect(ms).toBeLessThan(PROPAGATION_MS);
    }
    const answer = await b.client.call(m.checkPermission, {
      userId: viewer,
      permission: "can_approve_projects",
    });
    expect(answer.grantedBy).toEqual(["Viewer"]);

    since = await commit("DELETE FROM role_permission WHERE id = $1", [pair]);
    for (const ms of await Promise.all(
      replicas().map((r) => reflected(r, viewer, "CAN_APPROVE_PROJECTS", "denied", since)),
    )) {
      expect(ms).toBeLessThan(PROPAGATION_MS);
    }
  });

  it("a permission created by plain SQL goes from NOT_FOUND to allowed on every replica promptly (LISTEN, not the heartbeat)", async () => {
    const name = `CAN_COHERE_${randomBytes(4).toString("hex").toUpperCase()}`;
    const permissionId = randomUUID();
    const viewer = randomUUID();
    await sql("INSERT INTO user_role (user_id, role_id) VALUES ($1, $2)", [viewer, VIEWER_ID]);
    for (const r of replicas()) {
      const status = await r.client.fail(m.checkPermission, { userId: viewer, permission: name });
      expect(status).toEqual({ code: grpc.status.NOT_FOUND, details: `permission: no permission "${name}"` });
    }
    // As FLIP's API would: the permission, then the pair giving it to a role, in one transaction.
    await sql("BEGIN");
    await sql("INSERT INTO permission (id, permission_name, permission_description) VALUES ($1, $2, $3)", [
      permissionId,
      name,
      "added by FLIP",
    ]);
    await sql("INSERT INTO role_permission (id, role_id, permission_id) VALUES ($1, $2, $3)", [
      randomUUID(),
      VIEWER_ID,
      permissionId,
    ]);
    const since = await commit("COMMIT");
    for (const ms of await Promise.all(replicas().map((r) => reflected(r, viewer, name, "allowed", since)))) {
      expect(ms).toBeLessThan(PROPAGATION_MS);
    }
    // By id too, and listed.
    expect(await checkOutcome(a, viewer, permissionId)).toBe("allowed");
    const listed = await b.client.call(m.listPermissions, {});
    expect(listed.permissions.map((p) => p.name)).toContain(name);
  });

  it("a bulk plain-SQL write (20 000 rows in one statement) is quick, logged row by row, and reaches every replica", async () => {
    const rows = 20_000;
    const prefix = "00000000-0000-4000-9000-";
    const user = (i: number) => `${prefix}${i.toString(16).padStart(12, "0")}`;
    const last = user(rows);
    for (const r of replicas()) expect(await checkOutcome(r, last, "CAN_CREATE_PROJECTS")).toBe("denied");
    const before = Number((await sql("SELECT revision::text AS r FROM authz_revision")).rows[0]?.r);
    // A live watcher on B takes more than its buffer holds (10 000) at once: it must fall back to the log.
    const watched = takeAll(b.client.stream(m.watchChanges, { after: String(before) }), rows, 15_000);
    await sleep(200);
    const t0 = performance.now();
    await sql(
      `INSERT INTO user_role (user_id, role_id)
       SELECT ($1 || lpad(to_hex(g), 12, '0'))::uuid, $2 FROM generate_series(1, $3::int) g`,
      [prefix, RESEARCHER_ID, rows],
    );
    const since = performance.now();
    const took = since - t0;
    // Row-level triggers bumped the one counter row 20 000 times in one transaction: 9 s here, quadratic.
    expect(took).toBeLessThan(3000);
    const log = await sql(
      "SELECT count(*)::int AS n, min(revision)::text AS lo, max(revision)::text AS hi, count(DISTINCT user_id)::int AS users FROM authz_change_log WHERE revision > $1",
      [before],
    );
    expect(log.rows[0]).toEqual({ n: rows, lo: String(before + 1), hi: String(before + rows), users: rows });
    const times = await Promise.all(
      replicas().map((r) => reflected(r, last, "CAN_CREATE_PROJECTS", "allowed", since, { timeoutMs: 5000 })),
    );
    console.info(
      `bulk insert of ${rows} rows: ${took.toFixed(0)} ms; reflected after ${times.map((t) => t.toFixed(0)).join(" / ")} ms`,
    );
    const seen = await watched;
    expect(seen.error).toBeUndefined();
    expect(seen.messages).toHaveLength(rows);
    expect(seen.messages.every((msg, i) => msg.revision === String(before + i + 1))).toBe(true);
    expect(seen.messages.every((msg) => msg.kind === ChangeKind.USER_ROLES)).toBe(true);
    expect(new Set(seen.messages.map((msg) => msg.userId))).toEqual(
      new Set(Array.from({ length: rows }, (_, i) => user(i + 1))),
    );
    const removed = await commit("DELETE FROM user_role WHERE user_id::text LIKE $1", [`${prefix}%`]);
    for (const r of replicas()) {
      await reflected(r, last, "CAN_CREATE_PROJECTS", "denied", removed, { timeoutMs: 5000, holdMs: 0 });
    }
  });

  it("WatchChanges: a change made on A and one by plain SQL reach watchers on both replicas once, in order", async () => {
    const base = await a.client.call(m.assignRole, { userId: randomUUID(), role: "Viewer" });
    const after = base.writtenAt;
    // From a known revision, however late each server takes the call ("from now" is covered by the RPC
    // suite, where it cannot race a write).
    const watchers = [b, b, a].map((r) => r.client.stream(m.watchChanges, { after }));

    const viaA = randomUUID();
    const viaSql = randomUUID();
    const written = await a.client.call(m.assignRole, { userId: viaA, role: "Researcher" });
    await sql("INSERT INTO user_role (user_id, role_id) VALUES ($1, $2)", [viaSql, VIEWER_ID]);
    const expected = [
      { revision: written.writtenAt, kind: ChangeKind.USER_ROLES, userId: viaA },
      { revision: String(rev(written.writtenAt) + 1), kind: ChangeKind.USER_ROLES, userId: viaSql },
    ];
    expect(rev(written.writtenAt)).toBe(rev(after) + 1);

    // Asked for one more than expected: the timeout proves nothing else (no repeat) arrives.
    const results = await Promise.all(watchers.map((stream) => take(stream, 3, 1500)));
    for (const result of results) {
      expect(result.error).toBeUndefined();
      expect(result.messages.map(change)).toEqual(expected);
    }

    // A later watcher from the older revision replays the same changes from the log.
    const replay = await take(b.client.stream(m.watchChanges, { after }), 2, 5000);
    expect(replay.messages.map(change)).toEqual(expected);
    const fromMiddle = await take(b.client.stream(m.watchChanges, { after: written.writtenAt }), 1, 5000);
    expect(fromMiddle.messages.map(change)).toEqual(expected.slice(1));
  });

  it("at_least_as_fresh from A is honoured by B when B's feed is behind (B frozen while others write)", async () => {
    // B is frozen (SIGSTOP) while FLIP commits a run of changes and A writes; the check reaches B together
    // with the backlog of notifications, so B may handle it before its feed has applied A's write.
    const rounds = 5;
    let slowPath = 0;
    for (let round = 0; round < rounds; round++) {
      const user = randomUUID();
      expect(await checkOutcome(b, user, "CAN_CREATE_PROJECTS")).toBe("denied"); // cached on B
      const bypassBefore = await b.metric("authz_cache_bypass_reads");
      b.signal("SIGSTOP");
      let answer: Promise<{ allowed: boolean; checkedAt: string }> | undefined;
      let writtenAt = "";
      try {
        for (let i = 0; i < 100; i++) {
          await sql("INSERT INTO user_role (user_id, role_id) VALUES ($1, $2)", [randomUUID(), VIEWER_ID]);
        }
        writtenAt = (await a.client.call(m.assignRole, { userId: user, role: "Researcher" })).writtenAt;
        answer = b.client.call(m.checkPermission, {
          userId: user,
          permission: "CAN_CREATE_PROJECTS",
          atLeastAsFresh: writtenAt,
        });
        await sleep(20);
      } finally {
        b.signal("SIGCONT");
      }
      const t0 = performance.now();
      const result = await answer;
      const took = performance.now() - t0;
      expect(result?.allowed).toBe(true);
      expect(rev(result?.checkedAt ?? "")).toBeGreaterThanOrEqual(rev(writtenAt));
      if ((await b.metric("authz_cache_bypass_reads")) > bypassBefore || took > 20) slowPath++;
    }
    console.info(`at_least_as_fresh on a frozen B: ${slowPath}/${rounds} rounds waited or read the database`);
  });

  it("LISTEN connections killed, then a plain-SQL change at once: no replica answers stale for long, none flips back", async () => {
    const user = randomUUID();
    await sql("INSERT INTO user_role (user_id, role_id) VALUES ($1, $2)", [user, RESEARCHER_ID]);
    // Both replicas have the user cached as allowed.
    for (const r of replicas()) {
      await reflected(r, user, "CAN_CREATE_PROJECTS", "allowed", performance.now(), { holdMs: 0 });
    }
    const bypassBefore = await Promise.all(replicas().map((r) => r.metric("authz_cache_bypass_reads")));
    // A watcher on each replica, from the revision of the last change, across the outage.
    const { rows } = await sql("SELECT revision::text AS revision FROM authz_revision WHERE id = 1");
    const start = Number(rows[0]?.revision);
    const watchers = replicas().map((r) =>
      take(r.client.stream(m.watchChanges, { after: String(start) }), 3, 3500),
    );

    // Readiness watched throughout, every 5 ms.
    const readiness: { replica: string; at: number; ready: boolean }[] = [];
    let watching = true;
    const watchReady = (async () => {
      while (watching) {
        for (const r of replicas())
          readiness.push({ replica: r.name, at: performance.now(), ready: await r.ready() });
        await sleep(5);
      }
    })();

    const killed = await sql(
      "SELECT pg_terminate_backend(pid) AS terminated FROM pg_stat_activity WHERE query ILIKE 'LISTEN%' AND datname = current_database()",
    );
    expect(killed.rows.map((row) => row.terminated)).toEqual([true, true]);
    const since = await commit("DELETE FROM user_role WHERE user_id = $1", [user]);

    const times = await Promise.all(
      replicas().map((r) => reflected(r, user, "CAN_CREATE_PROJECTS", "denied", since, { holdMs: 1500 })),
    );
    for (const ms of times) expect(ms).toBeLessThan(PROPAGATION_MS);

    // Both feeds came back: ready again, and later changes still propagate through LISTEN.
    for (const r of replicas()) {
      for (let i = 0; !(await r.ready()); i++) {
        if (i > 100) throw new Error(`${r.name} not ready again within 10 s`);
        await sleep(100);
      }
    }
    watching = false;
    await watchReady;
    for (const r of replicas()) {
      expect(r.output()).toContain("change feed interrupted");
      // While its feed was down, each replica either said so on /readyz or answered from the database.
      const notReady = readiness.some((s) => s.replica === r.name && !s.ready);
      const bypass =
        (await r.metric("authz_cache_bypass_reads")) - (bypassBefore[replicas().indexOf(r)] ?? 0);
      expect(notReady || bypass > 0).toBe(true);
      console.info(`${r.name}: NOT_SERVING seen during the outage: ${notReady}; database reads: ${bypass}`);
    }
    const again = await commit("INSERT INTO user_role (user_id, role_id) VALUES ($1, $2)", [
      user,
      RESEARCHER_ID,
    ]);
    for (const ms of await Promise.all(
      replicas().map((r) => reflected(r, user, "CAN_CREATE_PROJECTS", "allowed", again)),
    )) {
      expect(ms).toBeLessThan(PROPAGATION_MS);
    }
    // The watchers saw the change made during the outage and the one after, each once, in order.
    for (const result of await Promise.all(watchers)) {
      expect(result.error).toBeUndefined();
      expect(result.messages.map(change)).toEqual([
        { revision: String(start + 1), kind: ChangeKind.USER_ROLES, userId: user },
        { revision: String(start + 2), kind: ChangeKind.USER_ROLES, userId: user },
      ]);
    }
  });
});
