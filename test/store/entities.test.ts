// The MikroORM entities map FLIP's tables on both engines: rows written by the store (raw SQL) load through
// the entities with the right property names, ids and Date timestamps.

import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { DatabaseConfig } from "../../src/config.ts";
import {
  ChangeLogEntry,
  Permission,
  RevisionCounter,
  Role,
  RolePermission,
  UserAudit,
  UserProfile,
  UserRole,
} from "../../src/store/entities.ts";
import { openStore, silentLogger } from "../../src/store/index.ts";
import { createOrm } from "../../src/store/orm.ts";
import { createTestDatabase, postgresAvailable } from "../helpers/postgres.ts";

const VIEWER_ID = "cdee79c9-a5e1-4b9e-a315-1ec2f3d29efe";

async function checkEntities(config: DatabaseConfig): Promise<void> {
  const user = randomUUID();
  const store = await openStore(config, { migrate: true });
  const assigned = await store.assignRole(user, VIEWER_ID, user);
  const profile = (await store.updateProfile(user, { name: "Ada", organisation: "Org" }, user)).profile;
  const orm = await createOrm(config, silentLogger);
  try {
    const em = orm.em();
    expect(await em.findOne(UserRole, { userId: user })).toMatchObject({ userId: user, roleId: VIEWER_ID });
    const loaded = await em.findOneOrFail(UserProfile, { userId: user });
    expect(loaded).toMatchObject({ name: "Ada", organisation: "Org" });
    expect(loaded.createdAt).toBeInstanceOf(Date);
    expect(loaded.createdAt.getTime()).toBe(profile.createdAt.getTime());
    const audit = await em.find(UserAudit, { userId: user }, { orderBy: { timestamp: "asc" } });
    expect(audit.map((row) => [row.action, row.modifiedByUserId])).toEqual([
      ["Assigned role Viewer", user],
      ["Updated user profile", user],
    ]);
    expect(audit[0]?.timestamp).toBeInstanceOf(Date);
    expect((await em.findOneOrFail(Permission, { name: "CAN_MANAGE_USERS" })).description).toBe(
      "CAN_MANAGE_USERS",
    );
    expect((await em.findOneOrFail(Role, { id: VIEWER_ID })).createdAt).toBeInstanceOf(Date);
    expect(await em.count(RolePermission, {})).toBe(10);
    expect(await em.findOneOrFail(ChangeLogEntry, { revision: assigned.revision })).toMatchObject({
      kind: "user_roles",
      userId: user,
    });
    expect((await em.findOneOrFail(RevisionCounter, { id: 1 })).revision).toBe(await store.currentRevision());
  } finally {
    await orm.orm.close(true);
    await store.close();
  }
}

describe("entities", () => {
  it("map the tables on SQLite", async () => {
    const dir = mkdtempSync(join(tmpdir(), "authz-entities-"));
    try {
      await checkEntities({ kind: "sqlite", path: join(dir, "authz.db") });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.skipIf(!postgresAvailable)("map the tables on PostgreSQL", async () => {
    const db = await createTestDatabase();
    try {
      await checkEntities({ kind: "postgres", url: db.url });
    } finally {
      await db.drop();
    }
  });
});
