// SQLite at the file level: adopting a FLIP-like database, WAL and foreign keys, and another process's
// plain-SQL writes reaching the change log and a subscription (through the poll).

import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_ROLE_ID, PERMISSIONS, ROLES } from "../../src/authz/flip.ts";
import { migrate, openStore, storeSql } from "../../src/store/index.ts";
import { recorder } from "./conformance.ts";
import { FLIP_SQLITE_DDL, FLIP_TABLES, sqliteExec, sqliteSnapshot } from "./fixtures.ts";

const VIEWER_ID = "cdee79c9-a5e1-4b9e-a315-1ec2f3d29efe";

function tableInfo(path: string): string[] {
  const db = new DatabaseSync(path);
  try {
    return FLIP_TABLES.flatMap((table) =>
      db
        .prepare(`SELECT name, type, "notnull", pk FROM pragma_table_info(?)`)
        .all(table)
        .map((row) => `${table}.${JSON.stringify(row)}`),
    );
  } finally {
    db.close();
  }
}

describe("SQLite: adopting a FLIP-like database", () => {
  let dir: string;
  let path: string;
  const user = randomUUID();
  const customRole = randomUUID();

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "authz-sqlite-"));
    path = join(dir, "flip.db");
    const db = new DatabaseSync(path);
    db.exec(FLIP_SQLITE_DDL);
    const at = Date.UTC(2024, 4, 1);
    for (const [name, id] of Object.entries(PERMISSIONS)) {
      db.prepare("INSERT INTO permission VALUES (?, ?, ?)").run(id, name, name);
    }
    for (const role of ROLES) {
      db.prepare("INSERT INTO roles VALUES (?, ?, ?, ?, ?)").run(
        role.id,
        role.name,
        role.description,
        at,
        at,
      );
      for (const permission of role.permissions) {
        db.prepare("INSERT INTO role_permission VALUES (?, ?, ?)").run(
          randomUUID(),
          role.id,
          PERMISSIONS[permission],
        );
      }
    }
    db.prepare("INSERT INTO roles VALUES (?, 'Pilot', 'Flies', ?, ?)").run(customRole, at, at);
    db.prepare("INSERT INTO user_role VALUES (?, ?), (?, ?)").run(user, customRole, user, ADMIN_ROLE_ID);
    db.prepare("INSERT INTO user_profile VALUES (?, 'Ada', 'FLIP', ?, ?)").run(user, at, at);
    db.prepare("INSERT INTO users_audit VALUES (?, 'Registered user', ?, ?, ?)").run(
      randomUUID(),
      user,
      user,
      at,
    );
    db.close();
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it("migrates without error, keeping every row and column declaration", async () => {
    const before = { rows: sqliteSnapshot(path, FLIP_TABLES), columns: tableInfo(path) };
    await migrate({ kind: "sqlite", path });
    expect(sqliteSnapshot(path, FLIP_TABLES)).toEqual(before.rows);
    expect(tableInfo(path)).toEqual(before.columns);
    expect(sqliteSnapshot(path, ["authz_change_log"]).authz_change_log).toEqual([]);
  });

  it("the store reads FLIP's rows and keeps the invariant for FLIP's admin", async () => {
    const store = await openStore({ kind: "sqlite", path }, { migrate: true });
    try {
      expect((await store.userRoles(user)).roleIds.sort()).toEqual([ADMIN_ROLE_ID, customRole].sort());
      expect(await store.resolveRole("pilot")).toEqual({ id: customRole, name: "Pilot" });
      expect((await store.getProfile(user)).profile?.createdAt.toISOString()).toBe(
        "2024-05-01T00:00:00.000Z",
      );
      await expect(store.revokeRole(user, ADMIN_ROLE_ID, user)).rejects.toThrow("no user holding Admin");
    } finally {
      await store.close();
    }
  });
});

describe("SQLite: a file database shared with other processes", () => {
  let dir: string;
  let path: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "authz-sqlite-"));
    path = join(dir, "deep", "er", "authz.db");
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it("creates the folder, runs in WAL mode with foreign keys on", async () => {
    const store = await openStore({ kind: "sqlite", path }, { migrate: true });
    try {
      expect(await storeSql(store, "PRAGMA journal_mode")).toEqual([{ journal_mode: "wal" }]);
      expect(await storeSql(store, "PRAGMA foreign_keys")).toEqual([{ foreign_keys: 1 }]);
      await expect(
        storeSql(store, "INSERT INTO user_role (user_id, role_id) VALUES (?, ?)", [
          randomUUID(),
          randomUUID(),
        ]),
      ).rejects.toThrow();
    } finally {
      await store.close();
    }
  });

  it("sees another connection's plain-SQL writes in the change log and through a subscription", async () => {
    const store = await openStore({ kind: "sqlite", path }, { migrate: false, pollIntervalMs: 50 });
    const rec = recorder();
    const start = await store.currentRevision();
    const subscription = await store.subscribe(start, rec.listener);
    try {
      const user = randomUUID();
      sqliteExec(path, "INSERT INTO user_role (user_id, role_id) VALUES (?, ?)", [user, VIEWER_ID]);
      sqliteExec(path, "UPDATE permission SET permission_description = 'x' WHERE id = ?", [
        PERMISSIONS.CAN_MANAGE_USERS,
      ]);
      sqliteExec(path, "INSERT INTO user_profile VALUES (?, 'n', 'o', 1, 1)", [user]);
      await rec.until(() => rec.changes.length >= 3);
      expect(rec.changes).toEqual([
        { revision: start + 1, kind: "user_roles", userId: user },
        { revision: start + 2, kind: "role_permissions", userId: null },
        { revision: start + 3, kind: "profile", userId: user },
      ]);
      expect(await store.changesAfter(start, 10)).toEqual(rec.changes);
      expect((await store.userRoles(user)).revision).toBe(start + 3);
    } finally {
      await subscription.close();
      await store.close();
    }
  });

  it("this store's own writes reach its subscribers at once, without waiting for the poll", async () => {
    const store = await openStore({ kind: "sqlite", path }, { migrate: false, pollIntervalMs: 60_000 });
    const rec = recorder();
    const subscription = await store.subscribe(await store.currentRevision(), rec.listener);
    try {
      const user = randomUUID();
      const written = await store.assignRole(user, VIEWER_ID, user);
      await rec.until(() => rec.changes.length >= 1, 1000);
      expect(rec.changes).toEqual([{ revision: written.revision, kind: "user_roles", userId: user }]);
    } finally {
      await subscription.close();
      await store.close();
    }
  });
});
