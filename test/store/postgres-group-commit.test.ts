// Group commit on PostgreSQL (src/store/group-commit.ts, SqlStore.commitGroup): writes that wait while
// others are written commit together, in one transaction (their rows share one xmin), each with its own
// audit row and its own revision; a write refused inside a group fails alone, and a write whose statement
// fails sends the others of its group on alone, where they succeed.
//
// A group is formed on purpose: a plain client holds one user's lock (the store's advisory lock), two writes
// for that user fill the store's two lanes and wait on it, and the writes submitted meanwhile queue; when
// the lock is released, they go as one group.

import { randomUUID } from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FailedPreconditionError, NotFoundError } from "../../src/authz/errors.ts";
import { ADMIN_ROLE_ID } from "../../src/authz/flip.ts";
import { NIL_UUID as NIL } from "../../src/authz/ids.ts";
import type { Store } from "../../src/authz/store.ts";
import { LANES } from "../../src/store/group-commit.ts";
import { openStore, storeSql } from "../../src/store/index.ts";
import { createTestDatabase, postgresAvailable, type TestDatabase } from "../helpers/postgres.ts";

const VIEWER_ID = "cdee79c9-a5e1-4b9e-a315-1ec2f3d29efe";
const RESEARCHER_ID = "10b64ed0-bc90-4c01-9cc3-933c704905c1";

describe.skipIf(!postgresAvailable)("PostgreSQL: group commit", () => {
  let db: TestDatabase;
  let store: Store;
  let holder: pg.Client;

  beforeAll(async () => {
    db = await createTestDatabase();
    store = await openStore({ kind: "postgres", url: db.url }, { migrate: true });
    holder = new pg.Client({ connectionString: db.url });
    await holder.connect();
  });
  afterAll(async () => {
    await holder?.end();
    await store?.close();
    await db?.drop();
  });

  /**
   * Runs `submit` while the store's lanes wait on a held user lock, so that what it submits queues and then
   * commits as one group; resolves to what it returned, settled, after the lanes' own writes.
   */
  async function inOneGroup<T>(submit: () => Promise<T>[]): Promise<PromiseSettledResult<Awaited<T>>[]> {
    const blocked = randomUUID();
    await holder.query("BEGIN");
    await holder.query("SELECT pg_advisory_xact_lock(17221, hashtext($1))", [blocked]);
    const lanes = Array.from({ length: LANES }, () =>
      store.updateProfile(blocked, { name: randomUUID() }, NIL),
    );
    // Both lanes' transactions are waiting on the lock before anything else is submitted (this database's
    // waits only: other suites take advisory locks in theirs).
    for (;;) {
      const { rows } = await holder.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
      );
      if ((rows[0]?.n ?? 0) >= LANES) break;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const settled = Promise.allSettled(submit());
    await holder.query("COMMIT");
    await Promise.all(lanes);
    return settled;
  }

  const xmins = async (table: string, users: string[]): Promise<string[]> =>
    (
      await storeSql(store, `SELECT DISTINCT xmin::text AS x FROM ${table} WHERE user_id = ANY(?::uuid[])`, [
        `{${users.join(",")}}`,
      ])
    ).map((row) => String(row.x));

  it("concurrent writes commit in one transaction, each with its audit row and its own revision", async () => {
    const start = await store.currentRevision();
    const users = Array.from({ length: 12 }, () => randomUUID());
    const settled = await inOneGroup(() => users.map((user) => store.assignRole(user, VIEWER_ID, NIL)));
    const writes = settled.map((result) => (result.status === "fulfilled" ? result.value : result.reason));
    expect(writes.every((write) => write.changed === true)).toBe(true);
    // One transaction wrote every pair and every audit row.
    const pairs = await xmins("user_role", users);
    expect(pairs).toHaveLength(1);
    expect(await xmins("users_audit", users)).toEqual(pairs);
    const audits = await storeSql(
      store,
      "SELECT user_id, action FROM users_audit WHERE user_id = ANY(?::uuid[])",
      [`{${users.join(",")}}`],
    );
    expect(audits.map((row) => String(row.user_id)).sort()).toEqual([...users].sort());
    expect(new Set(audits.map((row) => row.action))).toEqual(new Set(["Assigned role Viewer"]));
    // Revisions: the lanes' two writes and the group's twelve, contiguous; each write's is its own entry.
    const changes = await store.changesAfter(start, 100);
    expect(changes.map((change) => change.revision)).toEqual(
      Array.from({ length: LANES + users.length }, (_, i) => start + 1 + i),
    );
    const byRevision = new Map(changes.map((change) => [change.revision, change.userId]));
    users.forEach((user, i) => {
      expect(byRevision.get(writes[i].revision)).toBe(user);
    });
  });

  it("a write changing several rows, one changing nothing and a profile in one group: each revision its own", async () => {
    const [several, unchanged, profiled]: [string, string, string] = [
      randomUUID(),
      randomUUID(),
      randomUUID(),
    ];
    await store.setUserRoles(several, [VIEWER_ID, RESEARCHER_ID], NIL);
    await store.assignRole(unchanged, VIEWER_ID, NIL);
    const start = await store.currentRevision();
    const [set, same, profile] = await inOneGroup<{ revision: number; changed?: boolean }>(() => [
      store.setUserRoles(several, [ADMIN_ROLE_ID], NIL),
      store.assignRole(unchanged, VIEWER_ID, NIL),
      store.updateProfile(profiled, { name: "Grouped" }, NIL),
    ]);
    if (set?.status !== "fulfilled" || same?.status !== "fulfilled" || profile?.status !== "fulfilled")
      throw new Error("a write failed");
    const changes = (await store.changesAfter(start, 100)).filter((change) =>
      [several, unchanged, profiled].includes(change.userId ?? ""),
    );
    // SetUserRoles: two pairs removed, one added, three entries; its revision is the last of them.
    const ofSet = changes.filter((change) => change.userId === several).map((change) => change.revision);
    expect(ofSet).toHaveLength(3);
    expect(set.value.revision).toBe(ofSet[2]);
    // The unchanged write saw the group up to itself: the revision of the entry just before its place.
    expect(same.value.changed).toBe(false);
    expect(same.value.revision).toBe(set.value.revision);
    const ofProfile = changes.filter((change) => change.userId === profiled);
    expect(ofProfile).toEqual([{ revision: set.value.revision + 1, kind: "profile", userId: profiled }]);
    expect(profile.value.revision).toBe(set.value.revision + 1);
  });

  it("a write refused inside a group fails alone: the others commit together, nothing of it is written", async () => {
    const users = Array.from({ length: 6 }, () => randomUUID());
    const stranger = randomUUID();
    await storeSql(store, "DELETE FROM user_role WHERE role_id = ?", [ADMIN_ROLE_ID]);
    const onlyAdmin = randomUUID();
    await store.assignRole(onlyAdmin, ADMIN_ROLE_ID, NIL);
    const settled = await inOneGroup<unknown>(() => [
      store.assignRole(users[0] as string, VIEWER_ID, NIL),
      store.assignRole(stranger, randomUUID(), NIL),
      store.assignRole(users[1] as string, VIEWER_ID, NIL),
      store.revokeRole(onlyAdmin, ADMIN_ROLE_ID, NIL),
      ...users.slice(2).map((user) => store.assignRole(user, VIEWER_ID, NIL)),
    ]);
    expect(settled.map((result) => result.status)).toEqual([
      "fulfilled",
      "rejected",
      "fulfilled",
      "rejected",
      "fulfilled",
      "fulfilled",
      "fulfilled",
      "fulfilled",
    ]);
    const unknownRole = (settled[1] as PromiseRejectedResult).reason;
    expect(unknownRole).toBeInstanceOf(NotFoundError);
    expect(unknownRole.message).toMatch(/^role [0-9a-f-]{36} not found$/);
    const lastAdmin = (settled[3] as PromiseRejectedResult).reason;
    expect(lastAdmin).toBeInstanceOf(FailedPreconditionError);
    expect(lastAdmin.message).toBe("the call would leave no user holding Admin");
    expect(await xmins("user_role", users)).toHaveLength(1);
    expect((await store.userRoles(onlyAdmin)).roleIds).toEqual([ADMIN_ROLE_ID]);
    const refused = await storeSql(
      store,
      "SELECT count(*)::int AS n FROM users_audit WHERE user_id = ? OR (user_id = ? AND action LIKE 'Revoked%')",
      [stranger, onlyAdmin],
    );
    expect(refused[0]?.n).toBe(0);
  });

  it("taking Admin from two users in one group: the second is refused, one Admin remains", async () => {
    await storeSql(store, "DELETE FROM user_role WHERE role_id = ?", [ADMIN_ROLE_ID]);
    const [first, second] = [randomUUID(), randomUUID()];
    await store.assignRole(first, ADMIN_ROLE_ID, NIL);
    await store.assignRole(second, ADMIN_ROLE_ID, NIL);
    const [a, b] = await inOneGroup<unknown>(() => [
      store.revokeRole(first, ADMIN_ROLE_ID, NIL),
      store.setUserRoles(second, [VIEWER_ID], NIL),
    ]);
    expect(a?.status).toBe("fulfilled");
    expect(b?.status).toBe("rejected");
    expect((b as PromiseRejectedResult).reason).toBeInstanceOf(FailedPreconditionError);
    expect((b as PromiseRejectedResult).reason.message).toBe("the call would leave no user holding Admin");
    const holders = await storeSql(store, "SELECT user_id FROM user_role WHERE role_id = ?", [ADMIN_ROLE_ID]);
    expect(holders.map((row) => String(row.user_id))).toEqual([second]);
  });

  it("a statement failing inside a group sends the others on alone: they succeed, it fails with nothing written", async () => {
    const users = Array.from({ length: 5 }, () => randomUUID());
    const overlong = randomUUID();
    const settled = await inOneGroup<unknown>(() => [
      store.assignRole(users[0] as string, VIEWER_ID, NIL),
      store.assignRole(users[1] as string, VIEWER_ID, NIL),
      // user_profile.name is varchar(255): PostgreSQL refuses the row, and the group's transaction with it.
      store.updateProfile(overlong, { name: "x".repeat(300) }, NIL),
      ...users.slice(2).map((user) => store.updateProfile(user, { name: "Fine" }, NIL)),
    ]);
    expect(settled.map((result) => result.status)).toEqual([
      "fulfilled",
      "fulfilled",
      "rejected",
      "fulfilled",
      "fulfilled",
      "fulfilled",
    ]);
    expect((settled[2] as PromiseRejectedResult).reason.message).toBe("internal database error");
    // Each went again in a transaction of its own.
    expect(await xmins("users_audit", users)).toHaveLength(users.length);
    const written = await storeSql(store, "SELECT count(*)::int AS n FROM user_profile WHERE user_id = ?", [
      overlong,
    ]);
    expect(written[0]?.n).toBe(0);
    const audited = await storeSql(store, "SELECT count(*)::int AS n FROM users_audit WHERE user_id = ?", [
      overlong,
    ]);
    expect(audited[0]?.n).toBe(0);
  });
});
