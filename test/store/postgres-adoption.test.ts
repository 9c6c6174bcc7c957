// Adopting an existing FLIP database on PostgreSQL: FLIP's DDL verbatim plus rows (predefined and custom);
// migrating must keep every row and every column type, and the store must then read FLIP's data.

import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_ROLE_ID, PERMISSIONS, ROLES } from "../../src/authz/flip.ts";
import { migrate, openStore } from "../../src/store/index.ts";
import { createTestDatabase, postgresAvailable, type TestDatabase } from "../helpers/postgres.ts";
import { FLIP_POSTGRES_DDL, FLIP_TABLES, pgColumns, pgConstraints, pgSnapshot, withPg } from "./fixtures.ts";

describe.skipIf(!postgresAvailable)("PostgreSQL: adopting FLIP's database", () => {
  let db: TestDatabase;
  const user = randomUUID();
  const customRole = randomUUID();
  const customPermission = randomUUID();

  beforeAll(async () => {
    db = await createTestDatabase();
    await withPg(db.url, async (client) => {
      await client.query(FLIP_POSTGRES_DDL);
      // FLIP's rows as its own seed writes them, with microsecond timestamps.
      for (const [name, id] of Object.entries(PERMISSIONS)) {
        await client.query("INSERT INTO permission VALUES ($1, $2, $2)", [id, name]);
      }
      await client.query("INSERT INTO permission VALUES ($1, 'CAN_FLY', 'Custom permission')", [
        customPermission,
      ]);
      for (const role of ROLES) {
        await client.query(
          "INSERT INTO roles VALUES ($1, $2, $3, '2024-05-01 10:00:00.123456+00', '2024-05-02 11:00:00.654321+00')",
          [role.id, role.name, role.description],
        );
        for (const permission of role.permissions) {
          await client.query("INSERT INTO role_permission VALUES ($1, $2, $3)", [
            randomUUID(),
            role.id,
            PERMISSIONS[permission],
          ]);
        }
      }
      await client.query("INSERT INTO roles VALUES ($1, 'Pilot', 'Flies', now(), now())", [customRole]);
      await client.query("INSERT INTO role_permission VALUES ($1, $2, $3)", [
        randomUUID(),
        customRole,
        customPermission,
      ]);
      await client.query("INSERT INTO user_role VALUES ($1, $2), ($1, $3)", [
        user,
        customRole,
        ADMIN_ROLE_ID,
      ]);
      await client.query(
        "INSERT INTO user_profile VALUES ($1, 'Ada', 'FLIP', '2024-01-01 00:00:00.000001+00', '2024-01-02 00:00:00.999999+00')",
        [user],
      );
      await client.query(
        "INSERT INTO users_audit VALUES ($1, 'Registered user', $2, $2, '2024-01-01 00:00:00.5+00')",
        [randomUUID(), user],
      );
    });
  });
  afterAll(async () => {
    await db?.drop();
  });

  it("migrates without error, keeping every row, column type and constraint", async () => {
    const before = await withPg(db.url, async (client) => ({
      rows: await pgSnapshot(client, FLIP_TABLES),
      columns: await pgColumns(client),
      constraints: await pgConstraints(client),
    }));
    expect(before.rows.users_audit).toHaveLength(1);
    await migrate({ kind: "postgres", url: db.url });
    const after = await withPg(db.url, async (client) => ({
      rows: await pgSnapshot(client, FLIP_TABLES),
      columns: await pgColumns(client),
      constraints: await pgConstraints(client),
    }));
    expect(after.rows).toEqual(before.rows);
    expect(after.columns).toEqual(before.columns);
    expect(after.columns.length).toBe(23);
    expect(after.constraints).toEqual(before.constraints);
    // The seed found everything right, so it wrote nothing and logged no change.
    const log = await withPg(db.url, (client) =>
      client.query("SELECT count(*)::int AS n FROM authz_change_log"),
    );
    expect(log.rows[0].n).toBe(0);
  });

  it("adds its own indexes and triggers beside FLIP's tables", async () => {
    await migrate({ kind: "postgres", url: db.url }); // idempotent: this test stands on its own
    const { indexes, triggers } = await withPg(db.url, async (client) => ({
      indexes: (await client.query("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")).rows.map(
        (row) => row.indexname,
      ),
      triggers: (
        await client.query<{ name: string }>(
          `SELECT c.relname || ':' || t.tgname AS name FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
           WHERE NOT t.tgisinternal ORDER BY 1`,
        )
      ).rows.map((row) => row.name),
    }));
    expect(indexes).toEqual(
      expect.arrayContaining([
        "users_audit_timestamp_id_idx",
        "users_audit_user_id_timestamp_id_idx",
        "user_role_role_id_idx",
      ]),
    );
    // INSERT, UPDATE, DELETE and TRUNCATE on each of the five tables FLIP's writers touch, and the commit
    // trigger on a table of our own (the 20261202 migration).
    const tables = ["permission", "role_permission", "roles", "user_profile", "user_role"];
    expect(triggers).toEqual([
      "authz_pending_commit:authz_commit_revisions",
      ...tables.flatMap((table) =>
        ["delete", "insert", "truncate", "update"].map((event) => `${table}:authz_${table}_${event}_log`),
      ),
    ]);
  });

  it("the store reads FLIP's rows, including the custom role and permission", async () => {
    const store = await openStore({ kind: "postgres", url: db.url }, { migrate: true });
    try {
      expect((await store.userRoles(user)).roleIds.sort()).toEqual([ADMIN_ROLE_ID, customRole].sort());
      const catalog = await store.loadCatalog();
      expect(catalog.roles.find((role) => role.id === customRole)).toEqual({
        id: customRole,
        name: "Pilot",
        description: "Flies",
        permissionIds: [customPermission],
      });
      expect(await store.resolvePermission("can_fly")).toEqual({
        id: customPermission,
        name: "CAN_FLY",
        description: "Custom permission",
      });
      const { profile } = await store.getProfile(user);
      expect(profile).toMatchObject({ name: "Ada", organisation: "FLIP" });
      expect(profile?.createdAt.toISOString()).toBe("2024-01-01T00:00:00.000Z");
      const audit = await store.listAudit({ userId: user, limit: 10 });
      expect(audit.events).toEqual([
        expect.objectContaining({
          action: "Registered user",
          timestamp: new Date("2024-01-01T00:00:00.500Z"),
        }),
      ]);
      // FLIP's Admin holder is honoured by the invariant.
      expect((await store.revokeRole(user, customRole, user)).roles).toEqual([
        { id: ADMIN_ROLE_ID, name: "Admin" },
      ]);
      await expect(store.revokeRole(user, ADMIN_ROLE_ID, user)).rejects.toThrow("no user holding Admin");
    } finally {
      await store.close();
    }
  });
});
