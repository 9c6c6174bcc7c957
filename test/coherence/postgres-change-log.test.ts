// The PostgreSQL change log as FLIP's plain SQL fills it, statement by statement: one entry per changed row,
// the users a change touched (both, when a row moves to another user), nothing for an UPDATE that changes
// nothing, contiguous revisions, and bulk statements in linear time (the counter is bumped once per statement).

import { randomUUID } from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CachedReader } from "../../src/authz/cached-reader.ts";
import { ChangeHub } from "../../src/authz/change-hub.ts";
import { CACHED, createDirectReader } from "../../src/authz/reader.ts";
import type { Store } from "../../src/authz/store.ts";
import { openStore } from "../../src/store/index.ts";
import { createTestDatabase, postgresAvailable, type TestDatabase } from "../helpers/postgres.ts";
import { RESEARCHER_ID, VIEWER_ID } from "./replicas.ts";

const ADMIN_ROLE_ID = "64d3145b-034c-4328-b637-8eb54313b7c5";

describe.skipIf(!postgresAvailable)("coherence: PostgreSQL change log of plain-SQL statements", () => {
  let db: TestDatabase;
  let store: Store;
  let flip: pg.Client;

  beforeAll(async () => {
    db = await createTestDatabase("authz_changelog");
    store = await openStore({ kind: "postgres", url: db.url }, { migrate: true });
    flip = new pg.Client({ connectionString: db.url });
    flip.on("error", () => {});
    await flip.connect();
  });
  afterAll(async () => {
    await flip?.end();
    await store?.close();
    await db?.drop();
  });

  /** Runs `statement` and returns the log entries it added, as [kind, user] pairs, checking the revisions. */
  async function logged(statement: string, params: unknown[] = []): Promise<[string, string | null][]> {
    const start = await store.currentRevision();
    await flip.query(statement, params);
    const changes = await store.changesAfter(start, 100_000);
    expect(changes.map((c) => c.revision)).toEqual(changes.map((_, i) => start + i + 1));
    expect(await store.currentRevision()).toBe(start + changes.length);
    return changes.map((c) => [c.kind, c.userId]);
  }

  it("INSERT and DELETE of several rows: one entry per row, with its user", async () => {
    const [u, v] = [randomUUID(), randomUUID()];
    const inserted = await logged(
      "INSERT INTO user_role (user_id, role_id) VALUES ($1, $3), ($1, $4), ($2, $3)",
      [u, v, VIEWER_ID, RESEARCHER_ID],
    );
    expect(inserted.sort()).toEqual(
      [
        ["user_roles", u],
        ["user_roles", u],
        ["user_roles", v],
      ].sort(),
    );
    expect(await logged("DELETE FROM user_role WHERE user_id = ANY($1)", [[u, v]])).toHaveLength(3);
    // Statements that touch no row log nothing.
    expect(await logged("DELETE FROM user_role WHERE user_id = $1", [u])).toEqual([]);
    expect(
      await logged(
        "INSERT INTO user_role (user_id, role_id) SELECT user_id, role_id FROM user_role WHERE false",
      ),
    ).toEqual([]);
  });

  it("UPDATE: a changed row logs its user, a moved row both users, an unchanged row nothing", async () => {
    const [u, v] = [randomUUID(), randomUUID()];
    await flip.query("INSERT INTO user_role (user_id, role_id) VALUES ($1, $2), ($1, $3)", [
      u,
      VIEWER_ID,
      RESEARCHER_ID,
    ]);
    expect(
      await logged("UPDATE user_role SET role_id = $1 WHERE user_id = $2 AND role_id = $3", [
        ADMIN_ROLE_ID,
        u,
        VIEWER_ID,
      ]),
    ).toEqual([["user_roles", u]]);
    expect(await logged("UPDATE user_role SET role_id = role_id WHERE user_id = $1", [u])).toEqual([]);
    const moved = await logged("UPDATE user_role SET user_id = $1 WHERE user_id = $2 AND role_id = $3", [
      v,
      u,
      RESEARCHER_ID,
    ]);
    expect(moved.sort()).toEqual(
      [
        ["user_roles", u],
        ["user_roles", v],
      ].sort(),
    );
    expect((await store.userRoles(u)).roleIds).toEqual([ADMIN_ROLE_ID]);
    expect((await store.userRoles(v)).roleIds).toEqual([RESEARCHER_ID]);
    await flip.query("DELETE FROM user_role WHERE user_id = ANY($1)", [[u, v]]);

    expect(await logged("UPDATE roles SET description = description")).toEqual([]);
    expect(
      await logged("UPDATE roles SET description = description || '.' WHERE id = $1", [VIEWER_ID]),
    ).toEqual([["role_permissions", null]]);
    expect(
      await logged("UPDATE permission SET permission_description = permission_description || '.'"),
    ).toHaveLength(9);
    const profile = randomUUID();
    expect(
      await logged(
        "INSERT INTO user_profile (user_id, name, organisation, created_at, updated_at) VALUES ($1, 'a', 'b', now(), now())",
        [profile],
      ),
    ).toEqual([["profile", profile]]);
    expect(await logged("UPDATE user_profile SET organisation = 'c' WHERE user_id = $1", [profile])).toEqual([
      ["profile", profile],
    ]);
  });

  it("TRUNCATE: one entry per table, with no user (every user), and the feed delivers it", async () => {
    const user = randomUUID();
    await flip.query("INSERT INTO user_role (user_id, role_id) VALUES ($1, $2)", [user, VIEWER_ID]);
    await flip.query("INSERT INTO user_profile VALUES ($1, 'Ada', 'FLIP', now(), now())", [user]);
    const events: [string, string | null][] = [];
    const subscription = await store.subscribe(await store.currentRevision(), {
      onChanges: (changes) => events.push(...changes.map((c): [string, string | null] => [c.kind, c.userId])),
      onInterrupted: () => {},
      onResumed: () => {},
    });
    try {
      expect(await logged("TRUNCATE user_role, user_profile")).toEqual([
        ["user_roles", null],
        ["profile", null],
      ]);
      const deadline = Date.now() + 5000;
      while (events.length < 2 && Date.now() < deadline)
        await new Promise((resolve) => setTimeout(resolve, 10));
      expect(events).toEqual([
        ["user_roles", null],
        ["profile", null],
      ]);
    } finally {
      await subscription.close();
    }
  });

  it("TRUNCATE user_role empties every replica's user cache", async () => {
    const hub = new ChangeHub(store);
    await hub.start();
    const reader = new CachedReader(store, createDirectReader(store), { userCacheSize: 100 });
    await reader.start(hub);
    try {
      const users = [randomUUID(), randomUUID()];
      for (const user of users) {
        await flip.query("INSERT INTO user_role (user_id, role_id) VALUES ($1, $2)", [user, RESEARCHER_ID]);
      }
      expect(await reader.waitFor(await store.currentRevision(), 5000)).toBe(true);
      for (const user of users)
        expect((await reader.user(user, CACHED)).roles.map((r) => r.name)).toEqual(["Researcher"]);
      const misses = reader.stats.misses;
      expect((await reader.user(users[0] ?? "", CACHED)).roles).toHaveLength(1);
      expect(reader.stats.misses).toBe(misses); // served from the cache

      await flip.query("TRUNCATE user_role");
      expect(await reader.waitFor(await store.currentRevision(), 5000)).toBe(true);
      for (const user of users) expect((await reader.user(user, CACHED)).roles).toEqual([]);
    } finally {
      await reader.close();
      await hub.close();
    }
  });

  it("bulk statements of 20 000 rows run in linear time and log every row", async () => {
    const rows = 20_000;
    const prefix = "00000000-0000-4000-a000-";
    const timed = async (statement: string, params: unknown[]) => {
      const start = await store.currentRevision();
      const t0 = performance.now();
      await flip.query(statement, params);
      const ms = performance.now() - t0;
      return { ms, entries: (await store.currentRevision()) - start };
    };
    const insert = await timed(
      `INSERT INTO user_profile (user_id, name, organisation, created_at, updated_at)
       SELECT ($1 || lpad(to_hex(g), 12, '0'))::uuid, 'n', 'Old Org', now(), now() FROM generate_series(1, $2::int) g`,
      [prefix, rows],
    );
    const update = await timed("UPDATE user_profile SET organisation = $1 WHERE organisation = 'Old Org'", [
      "New Org",
    ]);
    const remove = await timed("DELETE FROM user_profile WHERE organisation = $1", ["New Org"]);
    console.info(
      `bulk of ${rows}: insert ${insert.ms.toFixed(0)} ms, update ${update.ms.toFixed(0)} ms, delete ${remove.ms.toFixed(0)} ms`,
    );
    expect([insert.entries, update.entries, remove.entries]).toEqual([rows, rows, rows]);
    // Row-level triggers took ~9 s for each of the insert and the update here (quadratic).
    for (const { ms } of [insert, update, remove]) expect(ms).toBeLessThan(3000);
  });
});
