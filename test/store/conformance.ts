// The one store conformance suite: every Store method, checked on its answers and on the rows it leaves in
// FLIP's tables. Each database engine runs it through a factory (sqlite file, sqlite memory, PostgreSQL).

import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { FailedPreconditionError, NotFoundError } from "../../src/authz/errors.ts";
import { ADMIN_ROLE_ID, PERMISSIONS, ROLES } from "../../src/authz/flip.ts";
import type { Change, ChangeListener, Store } from "../../src/authz/store.ts";

export interface StoreFixture {
  kind: "postgres" | "sqlite";
  store: Store;
  /** SQL on the store's own database (`?` placeholders), as FLIP's API would run it. */
  sql(query: string, params?: unknown[]): Promise<Record<string, unknown>[]>;
  close(): Promise<void>;
}

const RESEARCHER_ID = "10b64ed0-bc90-4c01-9cc3-933c704905c1";
const VIEWER_ID = "cdee79c9-a5e1-4b9e-a315-1ec2f3d29efe";

/** A timestamp column value as a Date, whichever way the engine stores it. */
export function columnDate(value: unknown): Date {
  if (value instanceof Date) return value;
  if (typeof value === "number" || (typeof value === "string" && /^\d+$/.test(value)))
    return new Date(Number(value));
  // PostgreSQL text form: `2026-11-30 06:32:01.044+00`.
  return new Date(
    String(value)
      .replace(" ", "T")
      .replace(/([+-]\d\d)$/, "$1:00"),
  );
}

/** Collects feed events; `until` waits for a condition on them. */
export function recorder() {
  const changes: Change[] = [];
  const events: string[] = [];
  const listener: ChangeListener = {
    onChanges: (batch) => {
      changes.push(...batch);
      for (const change of batch) events.push(`change:${change.revision}`);
    },
    onInterrupted: () => events.push("interrupted"),
    onResumed: () => events.push("resumed"),
  };
  const until = async (condition: () => boolean, timeoutMs = 10_000) => {
    const deadline = Date.now() + timeoutMs;
    while (!condition()) {
      if (Date.now() > deadline) throw new Error(`timed out; events: ${events.join(", ")}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  };
  return { changes, events, listener, until };
}

export function storeConformance(name: string, open: () => Promise<StoreFixture>, skip = false): void {
  describe.skipIf(skip)(`Store conformance: ${name}`, () => {
    let fx: StoreFixture;
    let store: Store;

    beforeAll(async () => {
      fx = await open();
      store = fx.store;
    });
    afterAll(async () => {
      await fx?.close();
    });

    const auditRows = (userId: string) =>
      fx.sql(
        `SELECT id, action, user_id, modified_by_user_id, "timestamp" FROM users_audit WHERE user_id = ?`,
        [userId],
      );
    const userRoleRows = async (userId: string) =>
      (await fx.sql("SELECT role_id FROM user_role WHERE user_id = ?", [userId]))
        .map((row) => String(row.role_id))
        .sort();

    describe("seeded catalog", () => {
      it("loadCatalog returns FLIP's permissions and roles with their pairs and the current revision", async () => {
        const catalog = await store.loadCatalog();
        const byId = new Map(catalog.permissions.map((p) => [p.id, p]));
        for (const [permissionName, id] of Object.entries(PERMISSIONS)) {
          expect(byId.get(id)).toEqual({ id, name: permissionName, description: permissionName });
        }
        for (const role of ROLES) {
          const found = catalog.roles.find((r) => r.id === role.id);
          expect(found?.name).toBe(role.name);
          expect(found?.description).toBe(role.description);
          expect([...(found?.permissionIds ?? [])].sort()).toEqual(
            role.permissions.map((p) => PERMISSIONS[p]).sort(),
          );
        }
        expect(catalog.revision).toBe(await store.currentRevision());
        expect(catalog.revision).toBeGreaterThan(0);
      });

      it("roles added by hand are part of the catalog, with distinct permission ids", async () => {
        const roleId = randomUUID();
        const permissionId = randomUUID();
        await fx.sql(
          "INSERT INTO permission (id, permission_name, permission_description) VALUES (?, ?, ?)",
          [permissionId, `CAN_TEST_${roleId.slice(0, 8)}`, "a test permission"],
        );
        await insertRole(fx, roleId, `Custom ${roleId.slice(0, 8)}`);
        // FLIP has no unique pair: a duplicate must still come out once.
        for (let i = 0; i < 2; i++) {
          await fx.sql("INSERT INTO role_permission (id, role_id, permission_id) VALUES (?, ?, ?)", [
            randomUUID(),
            roleId,
            permissionId,
          ]);
        }
        const catalog = await store.loadCatalog();
        expect(catalog.roles.find((r) => r.id === roleId)?.permissionIds).toEqual([permissionId]);
        expect(catalog.permissions.find((p) => p.id === permissionId)?.description).toBe("a test permission");
      });
    });

    describe("references", () => {
      it("resolveRole by exact name, any-case name and any-case UUID; null when unknown", async () => {
        const admin = { id: ADMIN_ROLE_ID, name: "Admin" };
        expect(await store.resolveRole("Admin")).toEqual(admin);
        expect(await store.resolveRole("aDMIN")).toEqual(admin);
        expect(await store.resolveRole(ADMIN_ROLE_ID.toUpperCase())).toEqual(admin);
        expect(await store.resolveRole("Nobody")).toBeNull();
        expect(await store.resolveRole(randomUUID())).toBeNull();
      });

      it("resolveRole prefers the exact-case name over another case-insensitive match", async () => {
        const suffix = randomUUID().slice(0, 8);
        const upper = randomUUID();
        const lower = randomUUID();
        await insertRole(fx, upper, `Twin${suffix}`);
        await insertRole(fx, lower, `twin${suffix}`);
        expect(await store.resolveRole(`twin${suffix}`)).toEqual({ id: lower, name: `twin${suffix}` });
        expect(await store.resolveRole(`Twin${suffix}`)).toEqual({ id: upper, name: `Twin${suffix}` });
      });

      it("matches non-ASCII names case-insensitively on every engine", async () => {
        const id = randomUUID();
        await insertRole(fx, id, `Élève ${id.slice(0, 8)}`);
        expect(await store.resolveRole(`éLÈVE ${id.slice(0, 8).toUpperCase()}`)).toEqual({
          id,
          name: `Élève ${id.slice(0, 8)}`,
        });
      });

      it("resolvePermission by name (any case) or UUID", async () => {
        const manage = {
          id: PERMISSIONS.CAN_MANAGE_USERS,
          name: "CAN_MANAGE_USERS",
          description: "CAN_MANAGE_USERS",
        };
        expect(await store.resolvePermission("CAN_MANAGE_USERS")).toEqual(manage);
        expect(await store.resolvePermission("can_manage_users")).toEqual(manage);
        expect(await store.resolvePermission(PERMISSIONS.CAN_MANAGE_USERS.toUpperCase())).toEqual(manage);
        expect(await store.resolvePermission("CAN_FLY")).toBeNull();
      });
    });

    describe("role writes", () => {
      it("assignRole adds the row and one audit row; repeating it changes nothing", async () => {
        const user = randomUUID();
        const actor = randomUUID();
        const before = await store.currentRevision();
        const started = Date.now();
        const result = await store.assignRole(user, RESEARCHER_ID, actor);
        expect(result.changed).toBe(true);
        expect(result.roles).toEqual([{ id: RESEARCHER_ID, name: "Researcher" }]);
        expect(result.revision).toBeGreaterThan(before);
        expect(result.revision).toBe(await store.currentRevision());
        expect(await userRoleRows(user)).toEqual([RESEARCHER_ID]);
        const audit = await auditRows(user);
        expect(audit).toHaveLength(1);
        expect(audit[0]).toMatchObject({
          action: "Assigned role Researcher",
          user_id: user,
          modified_by_user_id: actor,
        });
        const at = columnDate(audit[0]?.timestamp).getTime();
        expect(at).toBeGreaterThanOrEqual(started - 1000);
        expect(at).toBeLessThanOrEqual(Date.now() + 1000);

        const again = await store.assignRole(user, RESEARCHER_ID, actor);
        expect(again).toEqual({
          changed: false,
          roles: [{ id: RESEARCHER_ID, name: "Researcher" }],
          revision: result.revision,
        });
        expect(await auditRows(user)).toHaveLength(1);
      });

      it("answers with lower-case ids whatever case the caller used, and roles sorted by name", async () => {
        const user = randomUUID();
        await store.assignRole(user.toUpperCase(), VIEWER_ID.toUpperCase(), NIL);
        const result = await store.assignRole(user, RESEARCHER_ID, NIL);
        expect(result.roles.map((r) => r.name)).toEqual(["Researcher", "Viewer"]);
        expect(await userRoleRows(user)).toEqual([RESEARCHER_ID, VIEWER_ID].sort());
        const roles = await store.userRoles(user.toUpperCase());
        expect(roles.roleIds.sort()).toEqual([RESEARCHER_ID, VIEWER_ID].sort());
        expect(roles.revision).toBe(result.revision);
      });

      it("assignRole of an unknown role id is NotFound and writes nothing", async () => {
        const user = randomUUID();
        await expect(store.assignRole(user, randomUUID(), NIL)).rejects.toBeInstanceOf(NotFoundError);
        expect(await userRoleRows(user)).toEqual([]);
        expect(await auditRows(user)).toHaveLength(0);
      });

      it("revokeRole removes the row with an audit row; revoking a role not held changes nothing", async () => {
        const user = randomUUID();
        const actor = randomUUID();
        await store.assignRole(user, RESEARCHER_ID, actor);
        await store.assignRole(user, VIEWER_ID, actor);
        const result = await store.revokeRole(user, RESEARCHER_ID, actor);
        expect(result.changed).toBe(true);
        expect(result.roles).toEqual([{ id: VIEWER_ID, name: "Viewer" }]);
        expect(result.revision).toBe(await store.currentRevision());
        expect(await userRoleRows(user)).toEqual([VIEWER_ID]);
        const actions = (await auditRows(user)).map((row) => row.action).sort();
        expect(actions).toEqual([
          "Assigned role Researcher",
          "Assigned role Viewer",
          "Revoked role Researcher",
        ]);

        const again = await store.revokeRole(user, RESEARCHER_ID, actor);
        expect(again).toEqual({
          changed: false,
          roles: [{ id: VIEWER_ID, name: "Viewer" }],
          revision: result.revision,
        });
        expect(await auditRows(user)).toHaveLength(3);
        await expect(store.revokeRole(user, randomUUID(), actor)).rejects.toBeInstanceOf(NotFoundError);
      });

      it("setUserRoles replaces the set in one audited change; the same set again is unchanged", async () => {
        const user = randomUUID();
        const actor = randomUUID();
        await store.assignRole(user, VIEWER_ID, actor);
        const result = await store.setUserRoles(
          user,
          [RESEARCHER_ID, ADMIN_ROLE_ID, RESEARCHER_ID.toUpperCase()],
          actor,
        );
        expect(result.changed).toBe(true);
        expect(result.roles).toEqual([
          { id: ADMIN_ROLE_ID, name: "Admin" },
          { id: RESEARCHER_ID, name: "Researcher" },
        ]);
        expect(await userRoleRows(user)).toEqual([ADMIN_ROLE_ID, RESEARCHER_ID].sort());
        const audit = await auditRows(user);
        expect(audit.map((row) => row.action).sort()).toEqual(["Assigned role Viewer", "Updated user roles"]);
        expect(audit.every((row) => row.modified_by_user_id === actor)).toBe(true);

        const same = await store.setUserRoles(user, [ADMIN_ROLE_ID, RESEARCHER_ID], actor);
        expect(same.changed).toBe(false);
        expect(same.revision).toBe(result.revision);
        expect(await auditRows(user)).toHaveLength(2);

        await expect(store.setUserRoles(user, [VIEWER_ID, randomUUID()], actor)).rejects.toBeInstanceOf(
          NotFoundError,
        );
        expect(await userRoleRows(user)).toEqual([ADMIN_ROLE_ID, RESEARCHER_ID].sort());
      });

      it("setUserRoles with an empty list removes every role", async () => {
        const user = randomUUID();
        await store.setUserRoles(user, [RESEARCHER_ID, VIEWER_ID], NIL);
        const result = await store.setUserRoles(user, [], NIL);
        expect(result).toMatchObject({ changed: true, roles: [] });
        expect(await userRoleRows(user)).toEqual([]);
        expect(await store.userRoles(user)).toMatchObject({ roleIds: [] });
        expect(await store.setUserRoles(user, [], NIL)).toMatchObject({ changed: false, roles: [] });
        expect((await auditRows(user)).map((row) => row.action)).toEqual([
          "Updated user roles",
          "Updated user roles",
        ]);
      });
    });

    describe("the last Admin", () => {
      beforeEach(async () => {
        // Other tests may have made admins; these cases need to know exactly who holds Admin.
        await fx.sql("DELETE FROM user_role WHERE role_id = ?", [ADMIN_ROLE_ID]);
      });

      it("revoking Admin from the only admin fails and changes nothing", async () => {
        const admin = randomUUID();
        await store.assignRole(admin, ADMIN_ROLE_ID, NIL);
        const revision = await store.currentRevision();
        const error = await store.revokeRole(admin, ADMIN_ROLE_ID, NIL).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(FailedPreconditionError);
        expect((error as Error).message).toBe("the call would leave no user holding Admin");
        expect(await userRoleRows(admin)).toEqual([ADMIN_ROLE_ID]);
        expect((await auditRows(admin)).map((row) => row.action)).toEqual(["Assigned role Admin"]);
        expect(await store.currentRevision()).toBe(revision);
      });

      it("setUserRoles that drops the only admin's Admin fails; with a second admin it succeeds", async () => {
        const first = randomUUID();
        const second = randomUUID();
        await store.setUserRoles(first, [ADMIN_ROLE_ID, VIEWER_ID], NIL);
        await expect(store.setUserRoles(first, [VIEWER_ID], NIL)).rejects.toBeInstanceOf(
          FailedPreconditionError,
        );
        await expect(store.setUserRoles(first, [], NIL)).rejects.toBeInstanceOf(FailedPreconditionError);
        expect(await userRoleRows(first)).toEqual([ADMIN_ROLE_ID, VIEWER_ID].sort());

        await store.assignRole(second, ADMIN_ROLE_ID, NIL);
        expect(await store.setUserRoles(first, [VIEWER_ID], NIL)).toMatchObject({ changed: true });
        await expect(store.revokeRole(second, ADMIN_ROLE_ID, NIL)).rejects.toBeInstanceOf(
          FailedPreconditionError,
        );
        expect(await userRoleRows(second)).toEqual([ADMIN_ROLE_ID]);
      });

      it("when nobody holds Admin, writes that involve no Admin go through", async () => {
        const user = randomUUID();
        await store.assignRole(user, VIEWER_ID, NIL);
        expect(await store.revokeRole(user, VIEWER_ID, NIL)).toMatchObject({ changed: true });
        expect(await store.revokeRole(user, ADMIN_ROLE_ID, NIL)).toMatchObject({ changed: false });
      });
    });

    describe("profiles", () => {
      it("getProfile is null for an unknown user, with the revision the read reflects", async () => {
        expect(await store.getProfile(randomUUID())).toEqual({
          profile: null,
          revision: await store.currentRevision(),
        });
      });

      it("getProfile asked for many users at once answers each with its own profile, from one snapshot", async () => {
        const named = Array.from({ length: 5 }, () => randomUUID());
        for (const user of named) await store.updateProfile(user, { name: `name ${user}` }, NIL);
        const unknown = Array.from({ length: 5 }, () => randomUUID());
        const asked = [...named, ...unknown, named[0] as string, (named[1] as string).toUpperCase()];
        const revision = await store.currentRevision();
        const reads = await Promise.all(asked.map((user) => store.getProfile(user)));
        expect(reads.map((read) => read.profile?.name ?? null)).toEqual([
          ...named.map((user) => `name ${user}`),
          ...unknown.map(() => null),
          `name ${named[0]}`,
          `name ${named[1]}`,
        ]);
        expect(reads.map((read) => read.profile?.userId ?? null)).toEqual([
          ...named,
          ...unknown.map(() => null),
          named[0],
          named[1],
        ]);
        expect(new Set(reads.map((read) => read.revision))).toEqual(new Set([revision]));
        // Two callers asking about the same user each get their own object.
        expect(reads[10]).toEqual(reads[0]);
        expect(reads[10]?.profile).not.toBe(reads[0]?.profile);
      });

      it("updateProfile creates, patches and skips unchanged writes, auditing only changes", async () => {
        const user = randomUUID();
        const actor = randomUUID();
        const created = await store.updateProfile(user.toUpperCase(), { name: "Ada Lovelace" }, actor);
        expect(created.changed).toBe(true);
        expect(created.profile).toMatchObject({ userId: user, name: "Ada Lovelace", organisation: "" });
        expect(created.profile.createdAt).toBeInstanceOf(Date);
        expect(created.profile.createdAt.getTime()).toBe(created.profile.updatedAt.getTime());
        expect(created.revision).toBe(await store.currentRevision());
        const fetched = await store.getProfile(user);
        expect(fetched).toEqual({ profile: created.profile, revision: created.revision });

        await new Promise((resolve) => setTimeout(resolve, 5));
        const patched = await store.updateProfile(user, { organisation: "KCL ☃ 'quoted' ?" }, actor);
        expect(patched.changed).toBe(true);
        expect(patched.profile.name).toBe("Ada Lovelace");
        expect(patched.profile.organisation).toBe("KCL ☃ 'quoted' ?");
        expect(patched.profile.createdAt.getTime()).toBe(created.profile.createdAt.getTime());
        expect(patched.profile.updatedAt.getTime()).toBeGreaterThan(created.profile.updatedAt.getTime());
        expect(await store.getProfile(user)).toEqual({
          profile: patched.profile,
          revision: patched.revision,
        });

        const same = await store.updateProfile(user, { name: "Ada Lovelace" }, actor);
        expect(same).toEqual({ changed: false, profile: patched.profile, revision: patched.revision });

        const rows = await fx.sql("SELECT name, organisation FROM user_profile WHERE user_id = ?", [user]);
        expect(rows).toEqual([{ name: "Ada Lovelace", organisation: "KCL ☃ 'quoted' ?" }]);
        const audit = await auditRows(user);
        expect(audit.map((row) => row.action)).toEqual(["Updated user profile", "Updated user profile"]);
        expect(audit.every((row) => row.modified_by_user_id === actor)).toBe(true);
      });
    });

    describe("audit listing", () => {
      it("pages newest first by (timestamp, id) with next only while more rows exist", async () => {
        const user = randomUUID();
        const base = Date.UTC(2020, 0, 1, 12, 0, 0, 0);
        // Two pairs share a timestamp: the id must break the tie, across a page boundary too.
        const rows = [
          { id: "00000000-0000-4000-8000-000000000001", at: base },
          { id: "00000000-0000-4000-8000-000000000002", at: base + 1000 },
          { id: "00000000-0000-4000-8000-000000000003", at: base + 1000 },
          { id: "00000000-0000-4000-8000-000000000004", at: base + 2000 },
          { id: "00000000-0000-4000-8000-000000000005", at: base + 2000 },
        ].map((row) => ({ ...row, id: `${user.slice(0, 8)}${row.id.slice(8)}` }));
        for (const row of rows) {
          await fx.sql(
            `INSERT INTO users_audit (id, action, user_id, modified_by_user_id, "timestamp") VALUES (?, ?, ?, ?, ?)`,
            [
              row.id,
              `Action ${row.id.slice(-1)}`,
              user,
              NIL,
              fx.kind === "postgres" ? new Date(row.at).toISOString() : row.at,
            ],
          );
        }
        const expected = [...rows].reverse().map((row) => row.id);
        const first = await store.listAudit({ userId: user, limit: 2 });
        expect(first.events.map((e) => e.id)).toEqual(expected.slice(0, 2));
        expect(first.events[0]).toEqual({
          id: expected[0],
          action: "Action 5",
          userId: user,
          modifiedByUserId: NIL,
          timestamp: new Date(base + 2000),
        });
        expect(first.next).toEqual({ timestamp: new Date(base + 2000), id: expected[1] });
        const second = await store.listAudit({ userId: user, limit: 2, before: first.next });
        expect(second.events.map((e) => e.id)).toEqual(expected.slice(2, 4));
        const third = await store.listAudit({ userId: user, limit: 2, before: second.next });
        expect(third.events.map((e) => e.id)).toEqual(expected.slice(4));
        expect(third.next).toBeUndefined();
        const exact = await store.listAudit({ userId: user, limit: 5 });
        expect(exact.events).toHaveLength(5);
        expect(exact.next).toBeUndefined();
      });

      it("without a user filter lists every user's events, newest first, also within one millisecond", async () => {
        const [a, b, c] = [randomUUID(), randomUUID(), randomUUID()];
        // Back to back: often the same millisecond, which only the time-ordered ids can still order.
        await store.assignRole(a, VIEWER_ID, NIL);
        await store.assignRole(b, VIEWER_ID, NIL);
        await store.assignRole(c, VIEWER_ID, NIL);
        const page = await store.listAudit({ limit: 2 });
        expect(page.events.map((e) => e.userId)).toEqual([c, b]);
        expect(page.next).toEqual({ timestamp: page.events[1]?.timestamp, id: page.events[1]?.id });
        const rest = await store.listAudit({ limit: 1, ...(page.next && { before: page.next }) });
        expect(rest.events.map((e) => e.userId)).toEqual([a]);
        const times = page.events.map((e) => e.timestamp.getTime());
        expect(times[0]).toBeGreaterThanOrEqual(times[1] ?? 0);
      });
    });

    describe("change log", () => {
      it("records each write with its kind and user, in order; changesAfter honours after and limit", async () => {
        const user = randomUUID();
        const start = await store.currentRevision();
        const assigned = await store.assignRole(user, VIEWER_ID, NIL);
        const profile = await store.updateProfile(user, { name: "N" }, NIL);
        const changes = await store.changesAfter(start, 100);
        expect(changes).toEqual([
          { revision: assigned.revision, kind: "user_roles", userId: user },
          { revision: profile.revision, kind: "profile", userId: user },
        ]);
        expect(profile.revision).toBe(assigned.revision + 1);
        expect(await store.changesAfter(start, 1)).toHaveLength(1);
        expect(await store.changesAfter(profile.revision, 10)).toEqual([]);
        const oldest = await store.oldestRevision();
        expect(oldest).toBeGreaterThanOrEqual(1);
        expect(oldest).toBeLessThanOrEqual(start);
      });

      it("sees plain-SQL writes to user_role, role_permission and permission", async () => {
        const user = randomUUID();
        const permissionId = randomUUID();
        const pairId = randomUUID();
        const start = await store.currentRevision();
        await fx.sql("INSERT INTO user_role (user_id, role_id) VALUES (?, ?)", [user, VIEWER_ID]);
        await fx.sql(
          "INSERT INTO permission (id, permission_name, permission_description) VALUES (?, ?, ?)",
          [permissionId, `CAN_SQL_${permissionId.slice(0, 8)}`, "x"],
        );
        await fx.sql("INSERT INTO role_permission (id, role_id, permission_id) VALUES (?, ?, ?)", [
          pairId,
          VIEWER_ID,
          permissionId,
        ]);
        await fx.sql("DELETE FROM role_permission WHERE id = ?", [pairId]);
        await fx.sql("DELETE FROM user_role WHERE user_id = ?", [user]);
        // An UPDATE that changes nothing is not a change.
        await fx.sql("UPDATE permission SET permission_description = permission_description WHERE id = ?", [
          permissionId,
        ]);
        const changes = await store.changesAfter(start, 100);
        expect(changes.map((c) => [c.kind, c.userId])).toEqual([
          ["user_roles", user],
          ["role_permissions", null],
          ["role_permissions", null],
          ["role_permissions", null],
          ["user_roles", user],
        ]);
        expect(changes.map((c) => c.revision)).toEqual([1, 2, 3, 4, 5].map((i) => start + i));
        expect(await store.currentRevision()).toBe(start + 5);
        const { roleIds, revision } = await store.userRoles(user);
        expect(roleIds).toEqual([]);
        expect(revision).toBe(start + 5);
      });
    });

    describe("subscribe", () => {
      it("replays from `after`, then delivers this store's and plain-SQL writes in order, each once", async () => {
        const user = randomUUID();
        const start = await store.currentRevision();
        const first = await store.assignRole(user, VIEWER_ID, NIL);
        const rec = recorder();
        const subscription = await store.subscribe(start, rec.listener);
        try {
          await rec.until(() => rec.changes.length >= 1);
          expect(rec.changes[0]).toEqual({ revision: first.revision, kind: "user_roles", userId: user });
          const second = await store.updateProfile(user, { name: "Grace" }, NIL);
          await fx.sql("INSERT INTO user_role (user_id, role_id) VALUES (?, ?)", [user, RESEARCHER_ID]);
          await rec.until(() => rec.changes.length >= 3);
          expect(rec.changes.map((c) => [c.revision, c.kind])).toEqual([
            [first.revision, "user_roles"],
            [second.revision, "profile"],
            [second.revision + 1, "user_roles"],
          ]);
          expect(rec.events).not.toContain("interrupted");
        } finally {
          await subscription.close();
        }
        const count = rec.changes.length;
        await store.assignRole(randomUUID(), VIEWER_ID, NIL);
        await new Promise((resolve) => setTimeout(resolve, 400));
        expect(rec.changes).toHaveLength(count);
      });
    });

    describe("concurrency", () => {
      it("parallel writes and reads on one store all succeed, each write with its own revision", async () => {
        const users = Array.from({ length: 12 }, () => randomUUID());
        const start = await store.currentRevision();
        const [writes] = await Promise.all([
          Promise.all(users.map((user, i) => store.assignRole(user, i % 2 ? VIEWER_ID : RESEARCHER_ID, NIL))),
          Promise.all(users.map((user) => store.userRoles(user))),
          store.loadCatalog(),
          Promise.all(users.map((user) => store.updateProfile(user, { name: user }, NIL))),
        ]);
        const revisions = writes.map((w) => w.revision);
        expect(new Set(revisions).size).toBe(users.length);
        expect(await store.currentRevision()).toBe(start + 2 * users.length);
        const changes = await store.changesAfter(start, 100);
        expect(changes.map((c) => c.revision)).toEqual(
          Array.from({ length: 2 * users.length }, (_, i) => start + i + 1),
        );
        for (const [i, user] of users.entries()) {
          expect(await userRoleRows(user)).toEqual([i % 2 ? VIEWER_ID : RESEARCHER_ID]);
          expect(changes.find((c) => c.revision === writes[i]?.revision)).toEqual({
            revision: writes[i]?.revision,
            kind: "user_roles",
            userId: user,
          });
        }
      });
    });

    it("ping answers", async () => {
      await expect(store.ping()).resolves.toBeUndefined();
    });
  });
}

const NIL = "00000000-0000-0000-0000-000000000000";

async function insertRole(fx: StoreFixture, id: string, name: string): Promise<void> {
  const now = fx.kind === "postgres" ? new Date().toISOString() : Date.now();
  await fx.sql("INSERT INTO roles (id, name, description, created_at, updated_at) VALUES (?, ?, ?, ?, ?)", [
    id,
    name,
    "test role",
    now,
    now,
  ]);
}
