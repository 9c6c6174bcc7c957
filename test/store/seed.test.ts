// The seed on both engines: idempotent (a second migrate changes no row and bumps no revision), refreshes
// names and descriptions an operator changed, restores missing pairs, keeps pairs an operator added.

import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_ROLE_ID, PERMISSIONS, ROLES } from "../../src/authz/flip.ts";
import type { DatabaseConfig } from "../../src/config.ts";
import { migrate } from "../../src/store/index.ts";
import { createTestDatabase, postgresAvailable, type TestDatabase } from "../helpers/postgres.ts";
import { ALL_TABLES, pgSnapshot, sqliteExec, sqliteSnapshot, withPg } from "./fixtures.ts";

const RESEARCHER_ID = "10b64ed0-bc90-4c01-9cc3-933c704905c1";
const VIEWER_ID = "cdee79c9-a5e1-4b9e-a315-1ec2f3d29efe";

interface Engine {
  config: DatabaseConfig;
  /** Plain SQL with `?` placeholders. */
  exec(sql: string, params?: (string | number)[]): Promise<void>;
  snapshot(): Promise<Record<string, string[]>>;
  rows(sql: string, params?: string[]): Promise<Record<string, unknown>[]>;
}

function seedSuite(
  name: string,
  setup: () => Promise<{ engine: Engine; cleanup(): Promise<void> }>,
  skip = false,
) {
  describe.skipIf(skip)(`seed on ${name}`, () => {
    let engine: Engine;
    let cleanup: () => Promise<void>;

    beforeAll(async () => {
      ({ engine, cleanup } = await setup());
      await migrate(engine.config);
    });
    afterAll(async () => {
      await cleanup?.();
    });

    it("writes FLIP's rows once: a second and third migrate change no row of any table", async () => {
      const first = await engine.snapshot();
      const pairs = ROLES.reduce((n, role) => n + role.permissions.length, 0);
      expect(first.permission).toHaveLength(9);
      expect(first.roles).toHaveLength(3);
      expect(first.role_permission).toHaveLength(pairs);
      expect(first.authz_change_log).toHaveLength(9 + 3 + pairs);
      await migrate(engine.config);
      await migrate(engine.config);
      expect(await engine.snapshot()).toEqual(first);
    });

    it("refreshes renamed descriptions, restores a removed pair, keeps an operator's pair, never duplicates", async () => {
      await engine.exec("UPDATE permission SET permission_description = 'Manage users' WHERE id = ?", [
        PERMISSIONS.CAN_MANAGE_USERS,
      ]);
      await engine.exec("UPDATE roles SET name = 'Administrators', description = 'Ops' WHERE id = ?", [
        ADMIN_ROLE_ID,
      ]);
      await engine.exec("DELETE FROM role_permission WHERE role_id = ?", [RESEARCHER_ID]);
      const operatorPair = randomUUID();
      await engine.exec("INSERT INTO role_permission (id, role_id, permission_id) VALUES (?, ?, ?)", [
        operatorPair,
        VIEWER_ID,
        PERMISSIONS.CAN_MANAGE_PROJECTS,
      ]);
      const viewerBefore = await engine.rows("SELECT * FROM roles WHERE id = ?", [VIEWER_ID]);
      const revisionBefore = Number((await engine.rows("SELECT revision FROM authz_revision"))[0]?.revision);

      await migrate(engine.config);

      expect(
        await engine.rows("SELECT permission_name, permission_description FROM permission WHERE id = ?", [
          PERMISSIONS.CAN_MANAGE_USERS,
        ]),
      ).toEqual([{ permission_name: "CAN_MANAGE_USERS", permission_description: "CAN_MANAGE_USERS" }]);
      expect(await engine.rows("SELECT name, description FROM roles WHERE id = ?", [ADMIN_ROLE_ID])).toEqual([
        { name: "Admin", description: "A role for administrators." },
      ]);
      expect(
        await engine.rows("SELECT permission_id FROM role_permission WHERE role_id = ?", [RESEARCHER_ID]),
      ).toEqual([{ permission_id: PERMISSIONS.CAN_CREATE_PROJECTS }]);
      expect(
        await engine.rows("SELECT id, permission_id FROM role_permission WHERE role_id = ?", [VIEWER_ID]),
      ).toEqual([{ id: operatorPair, permission_id: PERMISSIONS.CAN_MANAGE_PROJECTS }]);
      const adminPairs = await engine.rows("SELECT permission_id FROM role_permission WHERE role_id = ?", [
        ADMIN_ROLE_ID,
      ]);
      expect(adminPairs).toHaveLength(9);
      // Untouched rows stay untouched (updated_at included); only the three repairs were logged.
      expect(await engine.rows("SELECT * FROM roles WHERE id = ?", [VIEWER_ID])).toEqual(viewerBefore);
      const revisionAfter = Number((await engine.rows("SELECT revision FROM authz_revision"))[0]?.revision);
      expect(revisionAfter - revisionBefore).toBe(3);
    });
  });
}

seedSuite("SQLite", async () => {
  const dir = mkdtempSync(join(tmpdir(), "authz-seed-"));
  const path = join(dir, "authz.db");
  return {
    engine: {
      config: { kind: "sqlite", path },
      exec: async (sql, params = []) => sqliteExec(path, sql, params),
      snapshot: async () => sqliteSnapshot(path, ALL_TABLES),
      rows: async (sql, params = []) => {
        const { DatabaseSync } = await import("node:sqlite");
        const db = new DatabaseSync(path);
        try {
          return db.prepare(sql).all(...params) as Record<string, unknown>[];
        } finally {
          db.close();
        }
      },
    },
    cleanup: async () => rmSync(dir, { recursive: true, force: true }),
  };
});

seedSuite(
  "PostgreSQL",
  async () => {
    const db: TestDatabase = await createTestDatabase();
    const numbered = (sql: string) => {
      let i = 0;
      return sql.replace(/\?/g, () => `$${++i}`);
    };
    return {
      engine: {
        config: { kind: "postgres", url: db.url },
        exec: (sql, params = []) => withPg(db.url, (c) => c.query(numbered(sql), params)).then(() => {}),
        snapshot: () => withPg(db.url, (c) => pgSnapshot(c, ALL_TABLES)),
        rows: (sql, params = []) => withPg(db.url, async (c) => (await c.query(numbered(sql), params)).rows),
      },
      cleanup: () => db.drop(),
    };
  },
  !postgresAvailable,
);
