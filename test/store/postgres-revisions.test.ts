// Revisions assigned at the end of the store's transactions (migrations 20261201 and 20261202: inside their
// COMMIT) beside plain-SQL writers that are logged at once: under a race of both, the log stays contiguous,
// each entry once, delivered in order; each store write's revision is its own entry; a rolled-back savepoint
// takes its pending entries with it; COMMIT announces the revision in a NOTICE, and without it (a proxy that
// drops notices) a write still answers a revision that reflects it.

import { randomUUID } from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Store } from "../../src/authz/store.ts";
import { openStore } from "../../src/store/index.ts";
import { createTestDatabase, postgresAvailable, type TestDatabase } from "../helpers/postgres.ts";
import { recorder } from "./conformance.ts";

const VIEWER_ID = "cdee79c9-a5e1-4b9e-a315-1ec2f3d29efe";
const RESEARCHER_ID = "10b64ed0-bc90-4c01-9cc3-933c704905c1";
const NIL = "00000000-0000-0000-0000-000000000000";

describe.skipIf(!postgresAvailable)("PostgreSQL: revisions assigned at commit", () => {
  let db: TestDatabase;
  let store: Store;
  const clients: pg.Client[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
    store = await openStore({ kind: "postgres", url: db.url }, { migrate: true });
    for (let i = 0; i < 4; i++) {
      const client = new pg.Client({ connectionString: db.url });
      await client.connect();
      clients.push(client);
    }
  });
  afterAll(async () => {
    await Promise.all(clients.map((client) => client.end()));
    await store?.close();
    await db?.drop();
  });

  it("store writes racing plain-SQL writes: contiguous, each once, in order, each write's revision its own", async () => {
    const start = await store.currentRevision();
    const rec = recorder();
    const subscription = await store.subscribe(start, rec.listener);
    try {
      const storeUsers = Array.from({ length: 40 }, () => randomUUID());
      const plainUsers = Array.from({ length: 20 }, () => randomUUID());
      const [writes] = await Promise.all([
        Promise.all(storeUsers.map((user) => store.assignRole(user, VIEWER_ID, user))),
        Promise.all(
          clients.map(async (client, c) => {
            for (const user of plainUsers.filter((_, i) => i % clients.length === c)) {
              await client.query("BEGIN");
              await client.query("INSERT INTO user_role (user_id, role_id) VALUES ($1, $2)", [
                user,
                VIEWER_ID,
              ]);
              await client.query("INSERT INTO user_role (user_id, role_id) VALUES ($1, $2)", [
                user,
                RESEARCHER_ID,
              ]);
              await client.query("COMMIT");
            }
          }),
        ),
      ]);
      const total = storeUsers.length + 2 * plainUsers.length;
      await rec.until(() => rec.changes.length >= total);
      expect(rec.changes.map((change) => change.revision)).toEqual(
        Array.from({ length: total }, (_, i) => start + 1 + i),
      );
      expect(await store.currentRevision()).toBe(start + total);
      const byRevision = new Map(rec.changes.map((change) => [change.revision, change]));
      writes.forEach((write, i) => {
        expect(byRevision.get(write.revision)).toEqual({
          revision: write.revision,
          kind: "user_roles",
          userId: storeUsers[i],
        });
      });
      // A plain-SQL transaction's two entries are consecutive: the counter's lock orders whole commits.
      for (const user of plainUsers) {
        const revisions = rec.changes
          .filter((change) => change.userId === user)
          .map((change) => change.revision);
        expect(revisions).toHaveLength(2);
        expect((revisions[1] ?? 0) - (revisions[0] ?? 0)).toBe(1);
      }
    } finally {
      await subscription.close();
    }
  });

  it("a transaction that asked gets its revisions inside COMMIT, announced in a NOTICE naming it", async () => {
    const client = clients[1] as pg.Client;
    const notices: { message?: string; detail?: string }[] = [];
    const onNotice = (notice: { message?: string; detail?: string }) => notices.push(notice);
    client.on("notice", onNotice);
    try {
      const start = await store.currentRevision();
      const user = randomUUID();
      await client.query("BEGIN");
      const { rows } = await client.query<{ txid: string }>("SELECT authz_defer_revisions()::text AS txid");
      // Asking twice in one transaction changes nothing.
      await client.query("SELECT authz_defer_revisions()");
      await client.query("INSERT INTO user_role (user_id, role_id) VALUES ($1, $2)", [user, VIEWER_ID]);
      // Before COMMIT the counter and the log are untouched, and the marker row is gone already.
      expect(await store.currentRevision()).toBe(start);
      const marker = await client.query("SELECT count(*)::int AS n FROM authz_pending_commit");
      expect(marker.rows[0].n).toBe(0);
      expect(notices).toEqual([]);
      await client.query("COMMIT");
      expect(notices.map((notice) => [notice.message, notice.detail])).toEqual([
        ["authz_commit_revision", `${rows[0]?.txid}:${start + 1}`],
      ]);
      expect(await store.changesAfter(start, 10)).toEqual([
        { revision: start + 1, kind: "user_roles", userId: user },
      ]);
      // Rolled back: nothing logged, nothing announced.
      await client.query("BEGIN");
      await client.query("SELECT authz_defer_revisions()");
      await client.query("INSERT INTO user_role (user_id, role_id) VALUES ($1, $2)", [
        randomUUID(),
        VIEWER_ID,
      ]);
      await client.query("ROLLBACK");
      expect(notices).toHaveLength(1);
      expect(await store.currentRevision()).toBe(start + 1);
    } finally {
      client.off("notice", onNotice);
    }
  });

  it("without the NOTICE (a proxy dropping notices) a write answers the counter after COMMIT, and says so once", async () => {
    const quiet = await createTestDatabase();
    const warnings: string[] = [];
    const logger = {
      info() {},
      error() {},
      warn: (_: object, message?: string) => warnings.push(message ?? ""),
    };
    const other = await openStore({ kind: "postgres", url: quiet.url }, { migrate: true, logger });
    const admin = new pg.Client({ connectionString: quiet.url });
    await admin.connect();
    try {
      // The commit trigger still assigns the revisions, but tells no one.
      await admin.query(`CREATE OR REPLACE FUNCTION authz_commit_revisions() RETURNS trigger LANGUAGE plpgsql AS $fn$
        BEGIN PERFORM authz_assign_revisions(); RETURN NULL; END $fn$`);
      const start = await other.currentRevision();
      const users = [randomUUID(), randomUUID()];
      const first = await other.assignRole(users[0] as string, VIEWER_ID, NIL);
      const second = await other.updateProfile(users[1] as string, { name: "Quiet" }, NIL);
      expect(first.revision).toBe(start + 1);
      expect(second.revision).toBe(start + 2);
      expect(await other.changesAfter(start, 10)).toEqual([
        { revision: start + 1, kind: "user_roles", userId: users[0] },
        { revision: start + 2, kind: "profile", userId: users[1] },
      ]);
      expect(warnings).toEqual([
        "PostgreSQL sent no revision NOTICE at COMMIT (does a proxy drop notices?): written_at is read after COMMIT instead, which may name a later revision",
      ]);
    } finally {
      await admin.end();
      await other.close();
      await quiet.drop();
    }
  });

  it("a deferring transaction's rolled-back savepoint logs nothing of it; the rest gets contiguous revisions", async () => {
    const client = clients[0] as pg.Client;
    const start = await store.currentRevision();
    const [kept, dropped, last] = [randomUUID(), randomUUID(), randomUUID()];
    await client.query("BEGIN");
    await client.query("SELECT set_config('authz.defer_revisions', 'on', true)");
    await client.query("INSERT INTO user_role (user_id, role_id) VALUES ($1, $2)", [kept, VIEWER_ID]);
    await client.query("SAVEPOINT s");
    await client.query("INSERT INTO user_role (user_id, role_id) VALUES ($1, $2)", [dropped, VIEWER_ID]);
    await client.query("ROLLBACK TO SAVEPOINT s");
    await client.query("INSERT INTO user_role (user_id, role_id) VALUES ($1, $2)", [last, VIEWER_ID]);
    // Nothing logged yet: the counter is untouched until the end.
    expect(await store.currentRevision()).toBe(start);
    const { rows } = await client.query<{ revision: string }>("SELECT authz_assign_revisions() AS revision");
    await client.query("COMMIT");
    expect(Number(rows[0]?.revision)).toBe(start + 2);
    expect(await store.changesAfter(start, 10)).toEqual([
      { revision: start + 1, kind: "user_roles", userId: kept },
      { revision: start + 2, kind: "user_roles", userId: last },
    ]);
  });
});
