// Races on one PostgreSQL database: two stores revoking each other's Admin at once (exactly one wins), and
// several processes' worth of stores migrating one empty database together.

import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FailedPreconditionError } from "../../src/authz/errors.ts";
import { ADMIN_ROLE_ID, ROLES } from "../../src/authz/flip.ts";
import type { Store } from "../../src/authz/store.ts";
import { migrate, openStore, storeSql } from "../../src/store/index.ts";
import { MIGRATIONS } from "../../src/store/orm.ts";
import { createTestDatabase, postgresAvailable, type TestDatabase } from "../helpers/postgres.ts";
import { withPg } from "./fixtures.ts";

describe.skipIf(!postgresAvailable)("PostgreSQL: the last Admin under concurrency", () => {
  let db: TestDatabase;
  let a: Store;
  let b: Store;

  beforeAll(async () => {
    db = await createTestDatabase();
    a = await openStore({ kind: "postgres", url: db.url }, { migrate: true });
    b = await openStore({ kind: "postgres", url: db.url }, { migrate: false });
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await db?.drop();
  });

  it("two revokes of the last two admins race: exactly one succeeds, one admin remains (20 rounds)", async () => {
    for (let round = 0; round < 20; round++) {
      await storeSql(a, "DELETE FROM user_role WHERE role_id = ?", [ADMIN_ROLE_ID]);
      const first = randomUUID();
      const second = randomUUID();
      await a.assignRole(first, ADMIN_ROLE_ID, first);
      await b.assignRole(second, ADMIN_ROLE_ID, second);
      const outcomes = await Promise.allSettled([
        a.revokeRole(second, ADMIN_ROLE_ID, first),
        b.revokeRole(first, ADMIN_ROLE_ID, second),
      ]);
      const won = outcomes.filter((o) => o.status === "fulfilled");
      const lost = outcomes.filter((o) => o.status === "rejected");
      expect(won).toHaveLength(1);
      expect(won[0]?.status === "fulfilled" && won[0].value.changed).toBe(true);
      expect(lost).toHaveLength(1);
      expect(lost[0]?.status === "rejected" && lost[0].reason).toBeInstanceOf(FailedPreconditionError);
      const admins = await storeSql(a, "SELECT user_id FROM user_role WHERE role_id = ?", [ADMIN_ROLE_ID]);
      expect(admins).toHaveLength(1);
      const revoked = await storeSql(
        a,
        "SELECT user_id FROM users_audit WHERE action = 'Revoked role Admin' AND user_id IN (?)",
        [[first, second]],
      );
      expect(revoked).toHaveLength(1);
      expect(revoked[0]?.user_id).not.toBe(admins[0]?.user_id);
    }
  });

  it("setUserRoles racing a revoke cannot strip the last two admins either", async () => {
    for (let round = 0; round < 10; round++) {
      await storeSql(a, "DELETE FROM user_role WHERE role_id = ?", [ADMIN_ROLE_ID]);
      const first = randomUUID();
      const second = randomUUID();
      await a.setUserRoles(first, [ADMIN_ROLE_ID], first);
      await a.setUserRoles(second, [ADMIN_ROLE_ID], second);
      const outcomes = await Promise.allSettled([
        a.setUserRoles(first, [], second),
        b.revokeRole(second, ADMIN_ROLE_ID, first),
      ]);
      expect(outcomes.filter((o) => o.status === "fulfilled")).toHaveLength(1);
      const loser = outcomes.find((o) => o.status === "rejected");
      expect(loser?.status === "rejected" && loser.reason).toBeInstanceOf(FailedPreconditionError);
      const admins = await storeSql(a, "SELECT user_id FROM user_role WHERE role_id = ?", [ADMIN_ROLE_ID]);
      expect(admins).toHaveLength(1);
      // The winner took its Admin away and wrote the one audit row; the loser wrote none.
      const kept = String(admins[0]?.user_id);
      const removed = kept === first ? second : first;
      expect(
        await storeSql(a, "SELECT action FROM users_audit WHERE user_id IN (?, ?) ORDER BY action", [
          first,
          second,
        ]),
      ).toEqual(
        [
          { action: "Updated user roles" },
          { action: "Updated user roles" },
          { action: removed === first ? "Updated user roles" : "Revoked role Admin" },
        ].sort((x, y) => (x.action < y.action ? -1 : 1)),
      );
    }
  });
});

describe.skipIf(!postgresAvailable)("PostgreSQL: concurrent migrations", () => {
  let db: TestDatabase;
  afterAll(async () => {
    await db?.drop();
  });

  it("six stores and migrate() calls at once on an empty database all succeed and seed once", async () => {
    db = await createTestDatabase();
    const config = { kind: "postgres", url: db.url } as const;
    const results = await Promise.allSettled([
      openStore(config, { migrate: true }),
      openStore(config, { migrate: true }),
      openStore(config, { migrate: true }),
      openStore(config, { migrate: true }),
      migrate(config),
      migrate(config),
    ]);
    const failures = results.filter((r) => r.status === "rejected").map((r) => String(r.reason));
    expect(failures).toEqual([]);
    for (const result of results) {
      if (result.status === "fulfilled" && result.value) await result.value.close();
    }
    const counts = await withPg(db.url, async (client) => {
      const q = async (sql: string) => (await client.query(sql)).rows[0]?.n;
      return {
        migrations: await q("SELECT count(*)::int AS n FROM authz_migrations"),
        permissions: await q("SELECT count(*)::int AS n FROM permission"),
        roles: await q("SELECT count(*)::int AS n FROM roles"),
        pairs: await q("SELECT count(*)::int AS n FROM role_permission"),
        distinctPairs: await q(
          "SELECT count(DISTINCT (role_id, permission_id))::int AS n FROM role_permission",
        ),
        changes: await q("SELECT count(*)::int AS n FROM authz_change_log"),
        revision: await q("SELECT revision::int AS n FROM authz_revision"),
      };
    });
    const pairs = ROLES.reduce((n, role) => n + role.permissions.length, 0);
    expect(counts).toEqual({
      migrations: MIGRATIONS.length,
      permissions: 9,
      roles: 3,
      pairs,
      distinctPairs: pairs,
      changes: 9 + 3 + pairs,
      revision: 9 + 3 + pairs,
    });
  });
});
