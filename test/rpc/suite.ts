// The end-to-end suite: the real app on port 0, called through a real @grpc/grpc-js client and over
// Connect JSON with fetch, asserting what a user sees (status code and message, response fields, rows in
// FLIP's tables). The same suite runs on a SQLite file and on PostgreSQL.

import { randomUUID } from "node:crypto";
import { type MessageShape, toJson } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type AuditEvent,
  AuthzService,
  ChangeKind,
  ListRolesResponseSchema,
  type WatchChangesResponse,
} from "../../gen/flip/authz/v1/authz_pb.ts";
import { type AppDatabase, eventually, startTestApp, type TestApp, take } from "../helpers/app.ts";

const m = AuthzService.method;
const S = grpc.status;

export const NIL = "00000000-0000-0000-0000-000000000000";
export const ADMIN_ID = "64d3145b-034c-4328-b637-8eb54313b7c5";
export const RESEARCHER_ID = "10b64ed0-bc90-4c01-9cc3-933c704905c1";
export const VIEWER_ID = "cdee79c9-a5e1-4b9e-a315-1ec2f3d29efe";
export const CAN_MANAGE_USERS_ID = "f6dbd04e-d1ef-4cb7-84c2-c29fb35cf83b";
export const CAN_CREATE_PROJECTS_ID = "1140ab45-fefb-4a3b-b350-90dd84f9be4b";

export const PERMISSIONS: [string, string][] = [
  ["CAN_ACCESS_ADMIN_PANEL", "6d1da2d7-e510-488c-9085-8608cd817256"],
  ["CAN_APPROVE_PROJECTS", "e2703e64-0186-4bc1-ac40-ba4ef63255ec"],
  ["CAN_CREATE_PROJECTS", "1140ab45-fefb-4a3b-b350-90dd84f9be4b"],
  ["CAN_DELETE_ANY_PROJECT", "fa2f251f-9d4d-4ba7-8dd1-becd9230dac0"],
  ["CAN_MANAGE_DEPLOYMENTS", "4c9769ed-a939-4c73-b320-139f574368c3"],
  ["CAN_MANAGE_PROJECTS", "fc2f242e-848f-4983-ab14-fd3c5604535d"],
  ["CAN_MANAGE_SITE_BANNER", "5a6c4185-6c90-4b26-bc87-f9436e2042b8"],
  ["CAN_MANAGE_USERS", "f6dbd04e-d1ef-4cb7-84c2-c29fb35cf83b"],
  ["CAN_UNSTAGE_PROJECTS", "a695be07-23c7-448d-a5df-36c3f63ca29d"],
];
const ALL_PERMISSION_NAMES = PERMISSIONS.map(([name]) => name);

const REVISION_MESSAGE = "must be a revision (from written_at, read_at, checked_at or WatchChanges)";

function rev(value: string): bigint {
  expect(value).toMatch(/^\d+$/);
  return BigInt(value);
}

/** The server registers a watcher when it handles the call; give it time to do so before writing. */
function settle(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export function rpcSuite(label: string, createDatabase: () => Promise<AppDatabase>): void {
  describe(`AuthzService end to end on ${label}`, () => {
    let db: AppDatabase;
    let t: TestApp;
    const sql = (query: string, params?: (string | number | null)[]) => db.sql(query, params);

    beforeAll(async () => {
      db = await createDatabase();
      t = await startTestApp(db.url);
    });
    afterAll(async () => {
      await t?.close();
      await db?.close();
    });

    const client = () => t.client;
    const assign = (userId: string, role: string) => client().call(m.assignRole, { userId, role });
    const revoke = (userId: string, role: string) => client().call(m.revokeRole, { userId, role });
    const setRoles = (userId: string, roles: string[]) => client().call(m.setUserRoles, { userId, roles });
    /** Another user holds Admin, so a test may take Admin away from its own user. */
    const keepAnAdmin = () => assign(randomUUID(), "Admin");
    const check = (
      userId: string,
      permission: string,
      extra: { fullyConsistent?: boolean; atLeastAsFresh?: string } = {},
    ) => client().call(m.checkPermission, { userId, permission, ...extra });
    const auditRows = (userId: string) =>
      sql(
        'SELECT action, user_id, modified_by_user_id FROM users_audit WHERE user_id = ? ORDER BY "timestamp", id',
        [userId],
      );
    const roleRows = async (userId: string) =>
      (await sql("SELECT role_id FROM user_role WHERE user_id = ? ORDER BY role_id", [userId])).map((row) =>
        String(row.role_id),
      );
    const profileRow = async (userId: string) =>
      (await sql("SELECT name, organisation FROM user_profile WHERE user_id = ?", [userId]))[0];

    describe("CheckPermission", () => {
      it("allows with granted_by = the sorted names of the roles carrying the permission", async () => {
        const user = randomUUID();
        await assign(user, "Researcher");
        await assign(user, "Admin");
        const answer = await check(user, "CAN_CREATE_PROJECTS");
        expect(answer.allowed).toBe(true);
        expect(answer.grantedBy).toEqual(["Admin", "Researcher"]);
        expect(answer.checkedAt).toMatch(/^\d+$/);
        const only = await check(user, "CAN_MANAGE_USERS");
        expect(only).toMatchObject({ allowed: true, grantedBy: ["Admin"] });
      });

      it("denies with allowed false and an empty granted_by; a user with no rows is denied, not an error", async () => {
        const viewer = randomUUID();
        await assign(viewer, "Viewer");
        const denied = await check(viewer, "CAN_MANAGE_USERS");
        expect(denied.allowed).toBe(false);
        expect(denied.grantedBy).toEqual([]);
        expect(denied.checkedAt).toMatch(/^\d+$/);
        const nobody = await check(randomUUID(), "CAN_CREATE_PROJECTS");
        expect(nobody.allowed).toBe(false);
        expect(nobody.grantedBy).toEqual([]);
      });

      it("takes the permission by name in any case or by UUID in any case, and user_id in upper case", async () => {
        const user = randomUUID();
        await assign(user, "Researcher");
        for (const permission of [
          "CAN_CREATE_PROJECTS",
          "can_create_projects",
          "Can_Create_Projects",
          CAN_CREATE_PROJECTS_ID,
          CAN_CREATE_PROJECTS_ID.toUpperCase(),
        ]) {
          const answer = await check(user, permission);
          expect({ permission, allowed: answer.allowed, grantedBy: answer.grantedBy }).toEqual({
            permission,
            allowed: true,
            grantedBy: ["Researcher"],
          });
        }
        const upper = await check(user.toUpperCase(), "CAN_CREATE_PROJECTS");
        expect(upper).toMatchObject({ allowed: true, grantedBy: ["Researcher"] });
        const denied = await check(user.toUpperCase(), CAN_MANAGE_USERS_ID.toUpperCase());
        expect(denied).toMatchObject({ allowed: false, grantedBy: [] });
      });

      it.each([
        [
          { userId: "not-a-uuid", permission: "CAN_MANAGE_USERS" },
          S.INVALID_ARGUMENT,
          "user_id: must be a UUID",
        ],
        [
          { userId: "6d1da2d7-e510-488c-9085-8608cd81725", permission: "CAN_MANAGE_USERS" },
          S.INVALID_ARGUMENT,
          "user_id: must be a UUID",
        ],
        [{ userId: "", permission: "CAN_MANAGE_USERS" }, S.INVALID_ARGUMENT, "user_id: required"],
        [{ userId: NIL, permission: "" }, S.INVALID_ARGUMENT, "permission: required"],
        [
          { userId: NIL, permission: "CAN_MANAGE_USERS", atLeastAsFresh: "yesterday" },
          S.INVALID_ARGUMENT,
          `at_least_as_fresh: ${REVISION_MESSAGE}`,
        ],
        [
          { userId: NIL, permission: "CAN_MANAGE_USERS", atLeastAsFresh: "-1" },
          S.INVALID_ARGUMENT,
          `at_least_as_fresh: ${REVISION_MESSAGE}`,
        ],
        [{ userId: NIL, permission: "CAN_FLY" }, S.NOT_FOUND, 'permission: no permission "CAN_FLY"'],
        [
          { userId: NIL, permission: "00000000-0000-0000-0000-00000000000a" },
          S.NOT_FOUND,
          'permission: no permission "00000000-0000-0000-0000-00000000000a"',
        ],
      ])("%j → %i %s", async (request, code, details) => {
        expect(await client().fail(m.checkPermission, request)).toEqual({ code, details });
      });
    });

    describe("CheckPermissions", () => {
      it("answers every check in order, each as CheckPermission would", async () => {
        const researcher = randomUUID();
        const admin = randomUUID();
        await assign(researcher, "Researcher");
        await assign(admin, "Admin");
        const checks = [
          { userId: researcher, permission: "CAN_CREATE_PROJECTS" },
          { userId: researcher, permission: "CAN_MANAGE_USERS" },
          { userId: admin.toUpperCase(), permission: "can_manage_users" },
          { userId: randomUUID(), permission: "CAN_CREATE_PROJECTS" },
        ];
        const { results } = await client().call(m.checkPermissions, { checks });
        expect(results.map((r) => [r.allowed, r.grantedBy])).toEqual([
          [true, ["Researcher"]],
          [false, []],
          [true, ["Admin"]],
          [false, []],
        ]);
        for (const result of results) expect(result.checkedAt).toMatch(/^\d+$/);
      });

      it("names the bad entry by its index", async () => {
        const good = { userId: NIL, permission: "CAN_MANAGE_USERS" };
        const noPermission = { userId: NIL, permission: "" };
        const badUser = { userId: "nope", permission: "CAN_MANAGE_USERS" };
        const checks = [good, noPermission, badUser];
        expect(await client().fail(m.checkPermissions, { checks })).toEqual({
          code: S.INVALID_ARGUMENT,
          details: "checks[1].permission: required",
        });
        expect(await client().fail(m.checkPermissions, { checks: [good, badUser] })).toEqual({
          code: S.INVALID_ARGUMENT,
          details: "checks[1].user_id: must be a UUID",
        });
        expect(await client().fail(m.checkPermissions, { checks: [good, good, badUser] })).toEqual({
          code: S.INVALID_ARGUMENT,
          details: "checks[2].user_id: must be a UUID",
        });
        expect(
          await client().fail(m.checkPermissions, {
            checks: [{ userId: NIL, permission: "CAN_MANAGE_USERS", atLeastAsFresh: "x" }],
          }),
        ).toEqual({ code: S.INVALID_ARGUMENT, details: `checks[0].at_least_as_fresh: ${REVISION_MESSAGE}` });
        expect(
          await client().fail(m.checkPermissions, {
            checks: [good, { userId: NIL, permission: "CAN_FLY" }],
          }),
        ).toEqual({ code: S.NOT_FOUND, details: 'checks[1].permission: no permission "CAN_FLY"' });
      });

      it("refuses more than the default 100 checks, and AUTHZ_MAX_BATCH lowers the limit", async () => {
        const one = { userId: NIL, permission: "CAN_MANAGE_USERS" };
        const hundred = await client().call(m.checkPermissions, { checks: Array(100).fill(one) });
        expect(hundred.results).toHaveLength(100);
        expect(await client().fail(m.checkPermissions, { checks: Array(101).fill(one) })).toEqual({
          code: S.INVALID_ARGUMENT,
          details: "checks: at most 100 checks per call (got 101)",
        });
        const small = await startTestApp(db.url, { AUTHZ_MAX_BATCH: "3" });
        try {
          expect(
            (await small.client.call(m.checkPermissions, { checks: Array(3).fill(one) })).results,
          ).toHaveLength(3);
          expect(await small.client.fail(m.checkPermissions, { checks: Array(4).fill(one) })).toEqual({
            code: S.INVALID_ARGUMENT,
            details: "checks: at most 3 checks per call (got 4)",
          });
        } finally {
          await small.close();
        }
      });

      it("answers a batch of 100 mixed checks in order, matching the single answers", async () => {
        const [admin, researcher, both, nobody] = [randomUUID(), randomUUID(), randomUUID(), randomUUID()];
        const users = [admin, researcher, both, nobody];
        await setRoles(admin, ["Admin"]);
        await setRoles(researcher, ["Researcher"]);
        await setRoles(both, ["Viewer", "Researcher"]);
        const checks = Array.from({ length: 100 }, (_, i) => {
          const user = users[i % users.length] ?? nobody;
          const [name, id] = PERMISSIONS[(i * 7) % PERMISSIONS.length] ?? ["", ""];
          return { userId: i % 3 === 0 ? user.toUpperCase() : user, permission: i % 2 === 0 ? name : id };
        });
        const { results } = await client().call(m.checkPermissions, { checks });
        expect(results).toHaveLength(100);
        const singles = [];
        for (const c of checks) singles.push(await check(c.userId, c.permission));
        expect(results.map((r) => [r.allowed, r.grantedBy])).toEqual(
          singles.map((r) => [r.allowed, r.grantedBy]),
        );
        // The same batch read from the database (100 reads at once) and at a revision gives the same answers.
        const full = await client().call(m.checkPermissions, {
          checks: checks.map((c) => ({ ...c, fullyConsistent: true })),
        });
        expect(full.results.map((r) => [r.allowed, r.grantedBy])).toEqual(
          results.map((r) => [r.allowed, r.grantedBy]),
        );
        const at = results[0]?.checkedAt ?? "";
        const fresh = await client().call(m.checkPermissions, {
          checks: checks.map((c) => ({ ...c, atLeastAsFresh: at })),
        });
        expect(fresh.results.map((r) => [r.allowed, r.grantedBy])).toEqual(
          results.map((r) => [r.allowed, r.grantedBy]),
        );
        expect(results.filter((r) => r.allowed).length).toBeGreaterThan(10);
        expect(results.filter((r) => !r.allowed).length).toBeGreaterThan(10);
      });
    });

    describe("AssignRole and RevokeRole", () => {
      it("assigns once (changed, full sorted roles, one audit row) and is idempotent", async () => {
        const user = randomUUID();
        const first = await assign(user, "ADMIN");
        expect(first.changed).toBe(true);
        expect(first.roles).toEqual(["Admin"]);
        const again = await assign(user, "admin");
        expect(again.changed).toBe(false);
        expect(again.roles).toEqual(["Admin"]);
        const second = await assign(user.toUpperCase(), RESEARCHER_ID.toUpperCase());
        expect(second.changed).toBe(true);
        expect(second.roles).toEqual(["Admin", "Researcher"]);
        expect(rev(second.writtenAt)).toBeGreaterThan(rev(first.writtenAt));
        expect(await roleRows(user)).toEqual([RESEARCHER_ID, ADMIN_ID].sort());
        expect(await auditRows(user)).toEqual([
          { action: "Assigned role Admin", user_id: user, modified_by_user_id: NIL },
          { action: "Assigned role Researcher", user_id: user, modified_by_user_id: NIL },
        ]);
      });

      it("revokes once (changed, remaining roles, one audit row) and is idempotent", async () => {
        await keepAnAdmin();
        const user = randomUUID();
        await assign(user, "Admin");
        const kept = await assign(user, "Viewer");
        const revoked = await revoke(user, "ADMIN");
        expect(revoked).toMatchObject({ changed: true, roles: ["Viewer"] });
        expect(rev(revoked.writtenAt)).toBeGreaterThan(rev(kept.writtenAt));
        const again = await revoke(user, ADMIN_ID);
        expect(again).toMatchObject({ changed: false, roles: ["Viewer"] });
        const never = await revoke(user, "Researcher");
        expect(never).toMatchObject({ changed: false, roles: ["Viewer"] });
        expect(await roleRows(user)).toEqual([VIEWER_ID]);
        expect(await auditRows(user)).toEqual([
          { action: "Assigned role Admin", user_id: user, modified_by_user_id: NIL },
          { action: "Assigned role Viewer", user_id: user, modified_by_user_id: NIL },
          { action: "Revoked role Admin", user_id: user, modified_by_user_id: NIL },
        ]);
        expect(await check(user, "CAN_MANAGE_USERS")).toMatchObject({ allowed: false, grantedBy: [] });
      });

      it.each([
        ["assignRole", { userId: "x", role: "Admin" }, S.INVALID_ARGUMENT, "user_id: must be a UUID"],
        ["assignRole", { userId: "", role: "Admin" }, S.INVALID_ARGUMENT, "user_id: required"],
        ["assignRole", { userId: NIL, role: "" }, S.INVALID_ARGUMENT, "role: required"],
        ["assignRole", { userId: NIL, role: "Pilot" }, S.NOT_FOUND, 'role: no role "Pilot"'],
        [
          "assignRole",
          { userId: NIL, role: CAN_MANAGE_USERS_ID },
          S.NOT_FOUND,
          `role: no role "${CAN_MANAGE_USERS_ID}"`,
        ],
        ["revokeRole", { userId: "x", role: "Admin" }, S.INVALID_ARGUMENT, "user_id: must be a UUID"],
        ["revokeRole", { userId: NIL, role: "" }, S.INVALID_ARGUMENT, "role: required"],
        ["revokeRole", { userId: NIL, role: "Pilot" }, S.NOT_FOUND, 'role: no role "Pilot"'],
      ] as const)("%s %j → %i %s", async (method, request, code, details) => {
        const status =
          method === "assignRole"
            ? await client().fail(m.assignRole, request)
            : await client().fail(m.revokeRole, request);
        expect(status).toEqual({ code, details });
      });

      it("writes nothing for a refused call", async () => {
        const user = randomUUID();
        await client().fail(m.assignRole, { userId: user, role: "Pilot" });
        expect(await roleRows(user)).toEqual([]);
        expect(await auditRows(user)).toEqual([]);
      });
    });

    describe("SetUserRoles", () => {
      it("replaces the whole set, ignores duplicates, audits 'Updated user roles' only on change", async () => {
        await keepAnAdmin();
        const user = randomUUID();
        await assign(user, "Admin");
        const set = await setRoles(user, ["viewer", "RESEARCHER"]);
        expect(set).toMatchObject({ changed: true, roles: ["Researcher", "Viewer"] });
        expect(await roleRows(user)).toEqual([RESEARCHER_ID, VIEWER_ID].sort());
        const same = await setRoles(user, ["Viewer", VIEWER_ID.toUpperCase(), "Researcher", "researcher"]);
        expect(same).toMatchObject({ changed: false, roles: ["Researcher", "Viewer"] });
        const none = await setRoles(user, []);
        expect(none).toMatchObject({ changed: true, roles: [] });
        expect(rev(none.writtenAt)).toBeGreaterThan(rev(set.writtenAt));
        expect(await roleRows(user)).toEqual([]);
        const noneAgain = await setRoles(user, []);
        expect(noneAgain).toMatchObject({ changed: false, roles: [] });
        expect(await auditRows(user)).toEqual([
          { action: "Assigned role Admin", user_id: user, modified_by_user_id: NIL },
          { action: "Updated user roles", user_id: user, modified_by_user_id: NIL },
          { action: "Updated user roles", user_id: user, modified_by_user_id: NIL },
        ]);
        expect(await check(user, "CAN_CREATE_PROJECTS")).toMatchObject({ allowed: false });
      });

      it("refuses an unknown role naming roles[i] and changes nothing", async () => {
        const user = randomUUID();
        await setRoles(user, ["Viewer"]);
        expect(await client().fail(m.setUserRoles, { userId: user, roles: ["Admin", "Pilot"] })).toEqual({
          code: S.NOT_FOUND,
          details: 'roles[1]: no role "Pilot"',
        });
        expect(await client().fail(m.setUserRoles, { userId: user, roles: ["Admin", ""] })).toEqual({
          code: S.INVALID_ARGUMENT,
          details: "roles[1]: required",
        });
        // Every entry is checked for form before any is looked up, as CheckPermissions does.
        expect(await client().fail(m.setUserRoles, { userId: user, roles: ["Pilot", "Admin", ""] })).toEqual({
          code: S.INVALID_ARGUMENT,
          details: "roles[2]: required",
        });
        expect(await client().fail(m.setUserRoles, { userId: "zz", roles: [] })).toEqual({
          code: S.INVALID_ARGUMENT,
          details: "user_id: must be a UUID",
        });
        expect(await roleRows(user)).toEqual([VIEWER_ID]);
        expect(await auditRows(user)).toEqual([
          { action: "Updated user roles", user_id: user, modified_by_user_id: NIL },
        ]);
      });
    });

    describe("huge references", () => {
      // A NOT_FOUND message used to quote the whole reference: a 100 000-character role went back in the
      // grpc-message trailer, the client reset the HTTP/2 session, and every call sharing it failed.
      const huge = "x".repeat(100_000);
      const quoted = `"${"x".repeat(64)}…"`;

      it.each([
        ["assignRole", `role: no role ${quoted}`],
        ["revokeRole", `role: no role ${quoted}`],
        ["setUserRoles", `roles[1]: no role ${quoted}`],
        ["checkPermission", `permission: no permission ${quoted}`],
        ["checkPermissions", `checks[0].permission: no permission ${quoted}`],
      ] as const)(
        "%s answers NOT_FOUND quoting the reference cut short, and the connection keeps serving",
        async (method, details) => {
          const userId = randomUUID();
          const c = client();
          const status =
            method === "assignRole"
              ? await c.fail(m.assignRole, { userId, role: huge })
              : method === "revokeRole"
                ? await c.fail(m.revokeRole, { userId, role: huge })
                : method === "setUserRoles"
                  ? await c.fail(m.setUserRoles, { userId, roles: ["Viewer", huge] })
                  : method === "checkPermission"
                    ? await c.fail(m.checkPermission, { userId, permission: huge })
                    : await c.fail(m.checkPermissions, { checks: [{ userId, permission: huge }] });
          expect(status).toEqual({ code: S.NOT_FOUND, details });
          expect((await c.call(m.listPermissions, {})).permissions).toHaveLength(9);
          expect(await roleRows(userId)).toEqual([]);
        },
      );

      it("quotes a reference of exactly 64 code points whole", async () => {
        const ref = "😀".repeat(64);
        expect(await client().fail(m.assignRole, { userId: NIL, role: ref })).toEqual({
          code: S.NOT_FOUND,
          details: `role: no role "${ref}"`,
        });
        expect(await client().fail(m.assignRole, { userId: NIL, role: `${ref}a` })).toEqual({
          code: S.NOT_FOUND,
          details: `role: no role "${ref}…"`,
        });
      });
    });

    describe("GetProfile and UpdateProfile", () => {
      it("GetProfile: NOT_FOUND for a user with neither profile nor role; bad ids are INVALID_ARGUMENT", async () => {
        const user = randomUUID();
        expect(await client().fail(m.getProfile, { userId: user })).toEqual({
          code: S.NOT_FOUND,
          details: `user_id: no user ${user}`,
        });
        expect(await client().fail(m.getProfile, { userId: "abc" })).toEqual({
          code: S.INVALID_ARGUMENT,
          details: "user_id: must be a UUID",
        });
      });

      it("GetProfile: a user with roles and no profile gets empty strings, unset timestamps, sorted roles and permissions", async () => {
        const user = randomUUID();
        await setRoles(user, ["Viewer", "Researcher"]);
        const { profile } = await client().call(m.getProfile, { userId: user.toUpperCase() });
        expect(profile).toBeDefined();
        expect(profile?.userId).toBe(user);
        expect(profile?.name).toBe("");
        expect(profile?.organisation).toBe("");
        expect(profile?.roles).toEqual(["Researcher", "Viewer"]);
        expect(profile?.permissions).toEqual(["CAN_CREATE_PROJECTS"]);
        expect(profile?.createdAt).toBeUndefined();
        expect(profile?.updatedAt).toBeUndefined();
        await assign(user, "Admin");
        const admin = (await client().call(m.getProfile, { userId: user })).profile;
        expect(admin?.roles).toEqual(["Admin", "Researcher", "Viewer"]);
        expect(admin?.permissions).toEqual(ALL_PERMISSION_NAMES);
      });

      it("UpdateProfile upserts; a name alone keeps the organisation; audited once per change", async () => {
        const user = randomUUID();
        const before = Date.now();
        const created = (await client().call(m.updateProfile, { userId: user, name: "Ada" })).profile;
        expect(created).toMatchObject({
          userId: user,
          name: "Ada",
          organisation: "",
          roles: [],
          permissions: [],
        });
        if (!created?.createdAt) throw new Error("created_at is unset");
        expect(timestampDate(created.createdAt).getTime()).toBeGreaterThanOrEqual(before - 1000);
        expect(await profileRow(user)).toEqual({ name: "Ada", organisation: "" });
        const org = (
          await client().call(m.updateProfile, { userId: user.toUpperCase(), organisation: "KCL" })
        ).profile;
        expect(org).toMatchObject({ userId: user, name: "Ada", organisation: "KCL" });
        const renamed = (await client().call(m.updateProfile, { userId: user, name: "Ada L." })).profile;
        expect(renamed).toMatchObject({ name: "Ada L.", organisation: "KCL" });
        expect(await profileRow(user)).toEqual({ name: "Ada L.", organisation: "KCL" });
        const same = (
          await client().call(m.updateProfile, { userId: user, name: "Ada L.", organisation: "KCL" })
        ).profile;
        expect(same).toMatchObject({ name: "Ada L.", organisation: "KCL" });
        const cleared = (await client().call(m.updateProfile, { userId: user, organisation: "" })).profile;
        expect(cleared).toMatchObject({ name: "Ada L.", organisation: "" });
        expect(await auditRows(user)).toEqual(
          Array(4).fill({ action: "Updated user profile", user_id: user, modified_by_user_id: NIL }),
        );
        const fetched = (await client().call(m.getProfile, { userId: user })).profile;
        expect(fetched).toMatchObject({ userId: user, name: "Ada L.", organisation: "", roles: [] });
        expect(fetched?.createdAt).toEqual(created?.createdAt);
      });

      it("stores untrusted text verbatim: emoji, HTML, quotes, backslashes", async () => {
        const user = randomUUID();
        const name = `<script>alert("x")</script> O'Brien "Bobby" \\ 😀 \u00e9\u0301 ${"&amp;"} ; DROP TABLE roles;--`;
        const organisation = "King's College London — 🏥 <b>NHS</b>";
        const { profile } = await client().call(m.updateProfile, { userId: user, name, organisation });
        expect(profile).toMatchObject({ name, organisation });
        expect(await profileRow(user)).toEqual({ name, organisation });
        expect((await client().call(m.getProfile, { userId: user })).profile).toMatchObject({
          name,
          organisation,
        });
      });

      it("keeps 255 code points (astral characters) and refuses 256, naming the field", async () => {
        const user = randomUUID();
        const max = "😀".repeat(255);
        expect(max.length).toBe(510);
        const { profile } = await client().call(m.updateProfile, {
          userId: user,
          name: max,
          organisation: max,
        });
        expect(profile).toMatchObject({ name: max, organisation: max });
        expect(await profileRow(user)).toEqual({ name: max, organisation: max });
        const tooLong = `${max}a`;
        expect(await client().fail(m.updateProfile, { userId: user, name: tooLong })).toEqual({
          code: S.INVALID_ARGUMENT,
          details: "name: must be at most 255 characters",
        });
        expect(
          await client().fail(m.updateProfile, { userId: user, name: "ok", organisation: tooLong }),
        ).toEqual({
          code: S.INVALID_ARGUMENT,
          details: "organisation: must be at most 255 characters",
        });
        expect(await client().fail(m.updateProfile, { userId: user, name: "a".repeat(256) })).toEqual({
          code: S.INVALID_ARGUMENT,
          details: "name: must be at most 255 characters",
        });
        expect(await profileRow(user)).toEqual({ name: max, organisation: max });
        expect(await auditRows(user)).toHaveLength(1);
      });

      it("refuses NUL and an empty patch, and a failed update changes nothing", async () => {
        const user = randomUUID();
        await client().call(m.updateProfile, { userId: user, name: "Grace", organisation: "Navy" });
        expect(await client().fail(m.updateProfile, { userId: user, name: "Gr\0ace" })).toEqual({
          code: S.INVALID_ARGUMENT,
          details: "name: must not contain NUL characters",
        });
        expect(
          await client().fail(m.updateProfile, { userId: user, name: "Hopper", organisation: "\0" }),
        ).toEqual({
          code: S.INVALID_ARGUMENT,
          details: "organisation: must not contain NUL characters",
        });
        expect(await client().fail(m.updateProfile, { userId: user })).toEqual({
          code: S.INVALID_ARGUMENT,
          details: "name: name or organisation is required",
        });
        expect(await client().fail(m.updateProfile, { userId: "no", name: "x" })).toEqual({
          code: S.INVALID_ARGUMENT,
          details: "user_id: must be a UUID",
        });
        expect(await profileRow(user)).toEqual({ name: "Grace", organisation: "Navy" });
        expect(await auditRows(user)).toHaveLength(1);
        const nobody = randomUUID();
        await client().fail(m.updateProfile, { userId: nobody, name: "\0" });
        expect(await profileRow(nobody)).toBeUndefined();
        expect(await auditRows(nobody)).toEqual([]);
      });
    });

    describe("ListRoles and ListPermissions", () => {
      it("lists FLIP's three roles with their ids, descriptions and sorted permissions", async () => {
        const { roles } = await client().call(m.listRoles, {});
        expect(
          roles.map((r) => ({
            id: r.id,
            name: r.name,
            description: r.description,
            permissions: r.permissions,
          })),
        ).toEqual([
          {
            id: ADMIN_ID,
            name: "Admin",
            description: "A role for administrators.",
            permissions: ALL_PERMISSION_NAMES,
          },
          {
            id: RESEARCHER_ID,
            name: "Researcher",
            description: "A researcher role, used as the default role with minimal permissions.",
            permissions: ["CAN_CREATE_PROJECTS"],
          },
          {
            id: VIEWER_ID,
            name: "Viewer",
            description: "Read-only access to assigned projects. Cannot create, edit, or delete resources.",
            permissions: [],
          },
        ]);
      });

      it("lists the nine permissions with ids, names and descriptions", async () => {
        const { permissions } = await client().call(m.listPermissions, {});
        expect(permissions.map((p) => ({ id: p.id, name: p.name, description: p.description }))).toEqual(
          PERMISSIONS.map(([name, id]) => ({ id, name, description: name })),
        );
      });
    });

    describe("ListAuditEvents", () => {
      let busy: string;
      let all: AuditEvent[];
      beforeAll(async () => {
        busy = randomUUID();
        for (let i = 0; i < 55; i++) await setRoles(busy, i % 2 === 0 ? ["Viewer"] : []);
        all = (await client().call(m.listAuditEvents, { userId: busy, pageSize: 500 })).events;
      });

      it("lists newest first, filtered by user, with FLIP's fields", async () => {
        expect(all).toHaveLength(55);
        for (const event of all) {
          expect(event).toMatchObject({ action: "Updated user roles", userId: busy, modifiedByUserId: NIL });
          expect(event.id).toMatch(/^[0-9a-f-]{36}$/);
        }
        const times = all.map((e) => {
          // A missing timestamp would be NaN, which toEqual takes as equal to NaN: refuse it outright.
          if (!e.timestamp) throw new Error(`audit event ${e.id} has no timestamp`);
          return timestampDate(e.timestamp).getTime();
        });
        expect([...times].sort((a, b) => b - a)).toEqual(times);
        const other = randomUUID();
        await assign(other, "Viewer");
        await revoke(other, "Viewer");
        const { events, nextPageToken } = await client().call(m.listAuditEvents, {
          userId: other.toUpperCase(),
        });
        expect(events.map((e) => [e.action, e.userId])).toEqual([
          ["Revoked role Viewer", other],
          ["Assigned role Viewer", other],
        ]);
        expect(nextPageToken).toBe("");
        const unfiltered = await client().call(m.listAuditEvents, { pageSize: 2 });
        expect(unfiltered.events.map((e) => e.action)).toEqual([
          "Revoked role Viewer",
          "Assigned role Viewer",
        ]);
        expect(unfiltered.nextPageToken).not.toBe("");
      });

      it("pages 50 by default (and for page_size 0)", async () => {
        for (const pageSize of [undefined, 0]) {
          const page = await client().call(m.listAuditEvents, {
            userId: busy,
            ...(pageSize === 0 && { pageSize }),
          });
          expect(page.events.map((e) => e.id)).toEqual(all.slice(0, 50).map((e) => e.id));
          expect(page.nextPageToken).not.toBe("");
          const rest = await client().call(m.listAuditEvents, {
            userId: busy,
            pageToken: page.nextPageToken,
          });
          expect(rest.events.map((e) => e.id)).toEqual(all.slice(50).map((e) => e.id));
          expect(rest.nextPageToken).toBe("");
        }
      });

      it("pages through with next_page_token: no duplicates, no gaps, empty token on the last page", async () => {
        for (const pageSize of [1, 7, 11, 55]) {
          const seen: string[] = [];
          let token = "";
          let pages = 0;
          do {
            const page = await client().call(m.listAuditEvents, { userId: busy, pageSize, pageToken: token });
            expect(page.events.length).toBeLessThanOrEqual(pageSize);
            seen.push(...page.events.map((e) => e.id));
            token = page.nextPageToken;
            pages++;
          } while (token !== "" && pages < 100);
          expect(seen).toEqual(all.map((e) => e.id));
          expect(pages).toBe(Math.ceil(55 / pageSize));
        }
      });

      it.each([
        [{ pageSize: 501 }, "page_size: must be between 1 and 500 (0 means 50)"],
        [{ pageSize: -1 }, "page_size: must be between 1 and 500 (0 means 50)"],
        [{ pageToken: "garbage" }, "page_token: is not a token from this listing"],
        [
          { pageToken: Buffer.from('["x","y"]').toString("base64url") },
          "page_token: is not a token from this listing",
        ],
        [{ userId: "nope" }, "user_id: must be a UUID"],
      ])("%j → INVALID_ARGUMENT %s", async (request, details) => {
        expect(await client().fail(m.listAuditEvents, request)).toEqual({
          code: S.INVALID_ARGUMENT,
          details,
        });
      });

      it("accepts page_size 500", async () => {
        const page = await client().call(m.listAuditEvents, { pageSize: 500 });
        expect(page.events.length).toBeGreaterThan(55);
        expect(page.events.length).toBeLessThanOrEqual(500);
      });
    });

    describe("WatchChanges", () => {
      it("from a written_at: replays later changes in order, then follows live ones", async () => {
        const user = randomUUID();
        const first = await assign(user, "Viewer");
        const second = await assign(user, "Researcher");
        await client().call(m.updateProfile, { userId: user, name: "Watcher" });
        const stream = client().stream(m.watchChanges, { after: first.writtenAt });
        const replay = take(stream, 3);
        await settle(300);
        const live = await revoke(user, "Viewer");
        const { messages, error } = await replay;
        expect(error).toBeUndefined();
        const mine = messages.map((c: WatchChangesResponse) => [c.kind, c.userId]);
        expect(mine).toEqual([
          [ChangeKind.USER_ROLES, user],
          [ChangeKind.PROFILE, user],
          [ChangeKind.USER_ROLES, user],
        ]);
        expect(messages[0]?.revision).toBe(second.writtenAt);
        expect(messages[2]?.revision).toBe(live.writtenAt);
        const revisions = messages.map((c) => rev(c.revision));
        expect([...revisions].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))).toEqual(revisions);
        expect(revisions[0]).toBeGreaterThan(rev(first.writtenAt));
      });

      it("with an empty after: only changes from now on", async () => {
        const user = randomUUID();
        const before = await assign(user, "Viewer");
        const stream = client().stream(m.watchChanges, { after: "" });
        const got = take(stream, 1);
        // "Now" is when the server handles the call, which a loaded machine may delay: write until one
        // change arrives; it must be one written after the stream opened, never the one before.
        const written: string[] = [];
        let arrived = false;
        void got.then(() => (arrived = true));
        for (let i = 0; i < 20 && !arrived; i++) {
          await settle(150);
          if (arrived) break;
          const write = i % 2 === 0 ? await assign(user, "Researcher") : await revoke(user, "Researcher");
          written.push(write.writtenAt);
        }
        const { messages, error } = await got;
        expect(error).toBeUndefined();
        expect(messages).toHaveLength(1);
        expect(messages[0]).toMatchObject({ kind: ChangeKind.USER_ROLES, userId: user });
        expect(written).toContain(messages[0]?.revision);
        expect(rev(messages[0]?.revision ?? "0")).toBeGreaterThan(rev(before.writtenAt));
      });

      it("reports each kind: role permissions (no user), profiles, roles written by plain SQL", async () => {
        const user = randomUUID();
        const start = await assign(user, "Viewer");
        const stream = client().stream(m.watchChanges, { after: start.writtenAt });
        const got = take(stream, 3);
        await settle(300);
        const id = randomUUID();
        await sql("INSERT INTO role_permission (id, role_id, permission_id) VALUES (?, ?, ?)", [
          id,
          VIEWER_ID,
          CAN_MANAGE_USERS_ID,
        ]);
        await client().call(m.updateProfile, { userId: user.toUpperCase(), organisation: "FLIP" });
        await sql("INSERT INTO user_role (user_id, role_id) VALUES (?, ?)", [user, RESEARCHER_ID]);
        const { messages, error } = await got;
        await sql("DELETE FROM role_permission WHERE id = ?", [id]);
        expect(error).toBeUndefined();
        expect(messages.map((c) => [c.kind, c.userId])).toEqual([
          [ChangeKind.ROLE_PERMISSIONS, ""],
          [ChangeKind.PROFILE, user],
          [ChangeKind.USER_ROLES, user],
        ]);
      });

      it("replays more changes than one catch-up read (600) in order, then follows live ones", async () => {
        const user = randomUUID();
        const start = await assign(user, "Viewer");
        const users = Array.from({ length: 600 }, () => randomUUID());
        const values = users.map(() => "(?, ?)").join(", ");
        await sql(
          `INSERT INTO user_role (user_id, role_id) VALUES ${values}`,
          users.flatMap((u) => [u, VIEWER_ID]),
        );
        const stream = client().stream(m.watchChanges, { after: start.writtenAt });
        const got = take(stream, 601, 10_000);
        await settle(300);
        const live = await assign(user, "Researcher");
        const { messages, error } = await got;
        expect(error).toBeUndefined();
        expect(messages).toHaveLength(601);
        expect(new Set(messages.slice(0, 600).map((c) => c.userId))).toEqual(new Set(users));
        const revisions = messages.map((c) => rev(c.revision));
        for (let i = 1; i < revisions.length; i++)
          expect(revisions[i]).toBeGreaterThan(revisions[i - 1] ?? 0n);
        expect(messages[600]).toMatchObject({ revision: live.writtenAt, userId: user });
      });

      it("refuses an after older than the change log keeps with INVALID_ARGUMENT naming after (API.md's codes)", async () => {
        const user = randomUUID();
        for (let i = 0; i < 4; i++) await setRoles(user, i % 2 === 0 ? ["Viewer"] : []);
        const last = await setRoles(user, ["Researcher"]);
        const oldest = rev(last.writtenAt) - 2n;
        // What the retention job does to old entries.
        await sql("DELETE FROM authz_change_log WHERE revision < ?", [Number(oldest)]);
        const { messages, error } = await take(
          client().stream(m.watchChanges, { after: String(oldest - 2n) }),
          1,
        );
        expect(messages).toEqual([]);
        expect(error).toEqual({
          code: S.INVALID_ARGUMENT,
          details: `after: revision ${oldest - 2n} is older than the change log keeps (oldest is ${oldest}); reload and watch from now`,
        });
        // The oldest revision a watcher can still resume from gets every change after it.
        const resumed = await take(client().stream(m.watchChanges, { after: String(oldest - 1n) }), 3);
        expect(resumed.error).toBeUndefined();
        expect(resumed.messages.map((c) => c.revision)).toEqual([
          String(oldest),
          String(oldest + 1n),
          last.writtenAt,
        ]);
      });

      it("refuses a garbage after with INVALID_ARGUMENT", async () => {
        const { messages, error } = await take(client().stream(m.watchChanges, { after: "garbage" }), 1);
        expect(messages).toEqual([]);
        expect(error).toEqual({ code: S.INVALID_ARGUMENT, details: `after: ${REVISION_MESSAGE}` });
      });
    });

    describe("the last Admin", () => {
      it("refuses to revoke or replace away the last Admin (FAILED_PRECONDITION), changing nothing", async () => {
        await sql("DELETE FROM user_role WHERE role_id = ?", [ADMIN_ID]);
        const last = randomUUID();
        await setRoles(last, ["Admin", "Viewer"]);
        const audits = await auditRows(last);
        const expected = {
          code: S.FAILED_PRECONDITION,
          details: "the call would leave no user holding Admin",
        };
        expect(await client().fail(m.revokeRole, { userId: last, role: "admin" })).toEqual(expected);
        expect(await client().fail(m.setUserRoles, { userId: last, roles: [] })).toEqual(expected);
        expect(
          await client().fail(m.setUserRoles, { userId: last, roles: ["Viewer", "Researcher"] }),
        ).toEqual(expected);
        expect(await roleRows(last)).toEqual([ADMIN_ID, VIEWER_ID].sort());
        expect(await auditRows(last)).toEqual(audits);
        expect(await check(last, "CAN_MANAGE_USERS", { fullyConsistent: true })).toMatchObject({
          allowed: true,
        });
        // Other roles of the last admin can still go; and once a second admin exists, so can this one.
        expect(await revoke(last, "Viewer")).toMatchObject({ changed: true, roles: ["Admin"] });
        const next = randomUUID();
        await assign(next, "Admin");
        expect(await revoke(last, "Admin")).toMatchObject({ changed: true, roles: [] });
        expect(await client().fail(m.setUserRoles, { userId: next, roles: ["Viewer"] })).toEqual(expected);
      });

      it("when no user holds Admin, other roles can still be revoked and replaced", async () => {
        await sql("DELETE FROM user_role WHERE role_id = ?", [ADMIN_ID]);
        const user = randomUUID();
        await setRoles(user, ["Researcher", "Viewer"]);
        expect(await revoke(user, "Researcher")).toMatchObject({ changed: true, roles: ["Viewer"] });
        expect(await setRoles(user, [])).toMatchObject({ changed: true, roles: [] });
        expect(await roleRows(user)).toEqual([]);
      });
    });

    describe("races", () => {
      it("ten concurrent AssignRole of one role: one change, one audit row, no error", async () => {
        const user = randomUUID();
        const answers = await Promise.allSettled(
          Array.from({ length: 10 }, () => assign(user, "Researcher")),
        );
        const statuses = answers.map((a) =>
          a.status === "fulfilled" ? `changed:${a.value.changed}` : `${a.reason.code} ${a.reason.details}`,
        );
        expect(statuses.filter((x) => x === "changed:true")).toHaveLength(1);
        expect(statuses.filter((x) => x === "changed:false")).toHaveLength(9);
        expect(await roleRows(user)).toEqual([RESEARCHER_ID]);
        expect(await auditRows(user)).toEqual([
          { action: "Assigned role Researcher", user_id: user, modified_by_user_id: NIL },
        ]);
      });

      it("ten concurrent first UpdateProfile calls of one user: one row, no error", async () => {
        const user = randomUUID();
        const answers = await Promise.allSettled(
          Array.from({ length: 10 }, (_, i) =>
            client().call(m.updateProfile, { userId: user, name: `N${i}` }),
          ),
        );
        const failures = answers.flatMap((a) =>
          a.status === "rejected" ? [`${a.reason.code} ${a.reason.details}`] : [],
        );
        expect(failures).toEqual([]);
        const rows = await sql("SELECT name FROM user_profile WHERE user_id = ?", [user]);
        expect(rows).toHaveLength(1);
        // Writes to one user are serialized and every name differs: ten changes, ten audit rows, and the
        // row holds one of the names.
        expect(Array.from({ length: 10 }, (_, i) => `N${i}`)).toContain(rows[0]?.name);
        const audits = await auditRows(user);
        expect(audits).toHaveLength(10);
        for (const audit of audits)
          expect(audit).toMatchObject({ action: "Updated user profile", user_id: user });
      });

      it("two admins revoking each other at once: exactly one succeeds, one Admin remains", async () => {
        await sql("DELETE FROM user_role WHERE role_id = ?", [ADMIN_ID]);
        const a = randomUUID();
        const b = randomUUID();
        await assign(a, "Admin");
        await assign(b, "Admin");
        const answers = await Promise.allSettled([revoke(a, "Admin"), revoke(b, "Admin")]);
        const outcomes = answers
          .map((x) => (x.status === "fulfilled" ? "ok" : `${x.reason.code} ${x.reason.details}`))
          .sort();
        expect(outcomes).toEqual([
          `${S.FAILED_PRECONDITION} the call would leave no user holding Admin`,
          "ok",
        ]);
        const admins = await sql("SELECT user_id FROM user_role WHERE role_id = ?", [ADMIN_ID]);
        expect(admins).toHaveLength(1);
        // The refused revoke changed nothing: one audit row in all, for the revoke that succeeded.
        const revoked = [...(await auditRows(a)), ...(await auditRows(b))].filter((row) =>
          String(row.action).startsWith("Revoked"),
        );
        expect(revoked).toHaveLength(1);
      });
    });

    describe("consistency", () => {
      it("a check at_least_as_fresh = written_at reflects the write", async () => {
        const user = randomUUID();
        expect(await check(user, "CAN_CREATE_PROJECTS")).toMatchObject({ allowed: false });
        const written = await assign(user, "Researcher");
        const fresh = await check(user, "CAN_CREATE_PROJECTS", { atLeastAsFresh: written.writtenAt });
        expect(fresh).toMatchObject({ allowed: true, grantedBy: ["Researcher"] });
        expect(rev(fresh.checkedAt)).toBeGreaterThanOrEqual(rev(written.writtenAt));
        const revoked = await revoke(user, "Researcher");
        const after = await check(user, "CAN_CREATE_PROJECTS", { atLeastAsFresh: revoked.writtenAt });
        expect(after).toMatchObject({ allowed: false });
      });

      it("refuses an at_least_as_fresh revision that has not been written, naming the field", async () => {
        const user = randomUUID();
        const written = await assign(user, "Researcher");
        const future = (rev(written.writtenAt) + 1_000_000n).toString();
        const status = await client().fail(m.checkPermission, {
          userId: user,
          permission: "CAN_CREATE_PROJECTS",
          atLeastAsFresh: future,
        });
        expect(status.code).toBe(S.INVALID_ARGUMENT);
        expect(status.details).toMatch(
          new RegExp(`^at_least_as_fresh: revision ${future} has not been written \\(the latest is \\d+\\)$`),
        );
      });

      it("at_least_as_fresh = written_at on another replica reflects the write", async () => {
        const replica = await startTestApp(db.url);
        try {
          for (let i = 0; i < 5; i++) {
            const user = randomUUID();
            // The replica has cached the user's empty set of roles.
            expect(
              await replica.client.call(m.checkPermission, {
                userId: user,
                permission: "CAN_CREATE_PROJECTS",
              }),
            ).toMatchObject({ allowed: false });
            const written = await assign(user, "Researcher");
            const fresh = await replica.client.call(m.checkPermission, {
              userId: user,
              permission: "CAN_CREATE_PROJECTS",
              atLeastAsFresh: written.writtenAt,
            });
            expect(fresh).toMatchObject({ allowed: true, grantedBy: ["Researcher"] });
            expect(rev(fresh.checkedAt)).toBeGreaterThanOrEqual(rev(written.writtenAt));
            // An unchanged write on the replica answers a revision that reflects the state it found.
            const unchanged = await replica.client.call(m.assignRole, { userId: user, role: "Researcher" });
            expect(unchanged).toMatchObject({ changed: false, roles: ["Researcher"] });
            expect(rev(unchanged.writtenAt)).toBeGreaterThanOrEqual(rev(written.writtenAt));
            const revoked = await revoke(user, "Researcher");
            const gone = await replica.client.call(m.checkPermission, {
              userId: user,
              permission: "CAN_CREATE_PROJECTS",
              atLeastAsFresh: revoked.writtenAt,
            });
            expect(gone).toMatchObject({ allowed: false, grantedBy: [] });
          }
        } finally {
          await replica.close();
        }
      });

      it("fully_consistent sees a plain-SQL insert at once; a cached check soon after", async () => {
        const user = randomUUID();
        // Warm the cache with the user's (empty) roles so that only invalidation can change the answer.
        expect(await check(user, "CAN_MANAGE_USERS")).toMatchObject({ allowed: false });
        expect(await check(user, "CAN_MANAGE_USERS")).toMatchObject({ allowed: false });
        await sql("INSERT INTO user_role (user_id, role_id) VALUES (?, ?)", [user, ADMIN_ID]);
        const full = await check(user, "CAN_MANAGE_USERS", { fullyConsistent: true });
        expect(full).toMatchObject({ allowed: true, grantedBy: ["Admin"] });
        const elapsed = await eventually(async () => (await check(user, "CAN_MANAGE_USERS")).allowed, 2000);
        expect(elapsed).toBeLessThan(db.kind === "postgres" ? 200 : 2000);
        // And a plain-SQL delete the same way.
        await sql("DELETE FROM user_role WHERE user_id = ?", [user]);
        expect(await check(user, "CAN_MANAGE_USERS", { fullyConsistent: true })).toMatchObject({
          allowed: false,
        });
        await eventually(async () => !(await check(user, "CAN_MANAGE_USERS")).allowed, 2000);
      });

      it("a plain-SQL change to a role's permissions reaches cached checks", async () => {
        const user = randomUUID();
        await assign(user, "Viewer");
        expect(await check(user, "CAN_MANAGE_PROJECTS")).toMatchObject({ allowed: false });
        const id = randomUUID();
        await sql("INSERT INTO role_permission (id, role_id, permission_id) VALUES (?, ?, ?)", [
          id,
          VIEWER_ID,
          "fc2f242e-848f-4983-ab14-fd3c5604535d",
        ]);
        try {
          await eventually(async () => (await check(user, "CAN_MANAGE_PROJECTS")).allowed, 2000);
          const { roles } = await client().call(m.listRoles, {});
          expect(roles.find((r) => r.name === "Viewer")?.permissions).toEqual(["CAN_MANAGE_PROJECTS"]);
        } finally {
          await sql("DELETE FROM role_permission WHERE id = ?", [id]);
        }
        await eventually(async () => !(await check(user, "CAN_MANAGE_PROJECTS")).allowed, 2000);
      });
    });

    describe("read_at and at_least_as_fresh on ListRoles, ListPermissions and GetProfile", () => {
      const postJson = async (method: string, body: unknown) => {
        const response = await fetch(`${t.httpBase}/flip.authz.v1.AuthzService/${method}`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(body),
        });
        return { status: response.status, body: (await response.json()) as Record<string, unknown> };
      };

      /** Changes as they arrive on one WatchChanges stream. */
      const watch = (after: string) => {
        const stream = client().stream(m.watchChanges, { after });
        const queue: WatchChangesResponse[] = [];
        let wake: (() => void) | undefined;
        stream.on("data", (change: WatchChangesResponse) => {
          queue.push(change);
          wake?.();
        });
        stream.on("error", () => {});
        return {
          async next(timeoutMs = 5000): Promise<WatchChangesResponse> {
            const deadline = Date.now() + timeoutMs;
            while (queue.length === 0) {
              if (Date.now() > deadline) throw new Error("no change arrived");
              await new Promise<void>((resolve) => {
                wake = resolve;
                setTimeout(resolve, 50);
              });
            }
            return queue.shift() as WatchChangesResponse;
          },
          close: () => stream.cancel(),
        };
      };

      it("every read answers read_at; with at_least_as_fresh = written_at, one at least that new", async () => {
        const user = randomUUID();
        const written = await assign(user, "Researcher");
        // Plain reads may be a moment behind the write (the cache applies it from the feed); they still
        // say which revision they reflect.
        const plain = [
          (await client().call(m.listRoles, {})).readAt,
          (await client().call(m.listPermissions, {})).readAt,
          (await client().call(m.getProfile, { userId: user })).readAt,
        ];
        for (const readAt of plain) expect(readAt).toMatch(/^\d+$/);
        const atLeastAsFresh = written.writtenAt;
        const fresh = [
          (await client().call(m.listRoles, { atLeastAsFresh })).readAt,
          (await client().call(m.listPermissions, { atLeastAsFresh })).readAt,
          (await client().call(m.getProfile, { userId: user, atLeastAsFresh })).readAt,
          String((await postJson("ListPermissions", { atLeastAsFresh })).body.readAt),
        ];
        for (const readAt of fresh) expect(rev(readAt)).toBeGreaterThanOrEqual(rev(written.writtenAt));
      });

      it("UpdateProfile answers written_at; GetProfile at_least_as_fresh = written_at on another replica sees the update", async () => {
        const replica = await startTestApp(db.url);
        try {
          for (let i = 0; i < 5; i++) {
            const user = randomUUID();
            const first = await client().call(m.updateProfile, { userId: user, name: `first ${i}` });
            // The replica caches the first profile.
            const seen = await replica.client.call(m.getProfile, {
              userId: user,
              atLeastAsFresh: first.writtenAt,
            });
            expect(seen.profile?.name).toBe(`first ${i}`);
            expect(rev(seen.readAt)).toBeGreaterThanOrEqual(rev(first.writtenAt));
            const second = await client().call(m.updateProfile, { userId: user, name: `second ${i}` });
            expect(rev(second.writtenAt)).toBeGreaterThan(rev(first.writtenAt));
            const fresh = await replica.client.call(m.getProfile, {
              userId: user,
              atLeastAsFresh: second.writtenAt,
            });
            expect(fresh.profile?.name).toBe(`second ${i}`);
            expect(rev(fresh.readAt)).toBeGreaterThanOrEqual(rev(second.writtenAt));
            // Unchanged: a written_at that the unchanged state reflects.
            const same = await client().call(m.updateProfile, { userId: user, name: `second ${i}` });
            expect(rev(same.writtenAt)).toBeGreaterThanOrEqual(rev(second.writtenAt));
          }
        } finally {
          await replica.close();
        }
      });

      it("ListRoles at_least_as_fresh = a ROLE_PERMISSIONS revision from WatchChanges shows that change, on both listeners", async () => {
        // The race seen before these fields: ListRoles right after the event gave the old map in 4 of 6 tries.
        const start = await assign(randomUUID(), "Viewer");
        const watcher = watch(start.writtenAt);
        const id = randomUUID();
        try {
          for (let i = 0; i < 12; i++) {
            const adding = i % 2 === 0;
            if (adding) {
              await sql("INSERT INTO role_permission (id, role_id, permission_id) VALUES (?, ?, ?)", [
                id,
                VIEWER_ID,
                CAN_MANAGE_USERS_ID,
              ]);
            } else {
              await sql("DELETE FROM role_permission WHERE id = ?", [id]);
            }
            let change = await watcher.next();
            while (change.kind !== ChangeKind.ROLE_PERMISSIONS) change = await watcher.next();
            const expected = adding ? ["CAN_MANAGE_USERS"] : [];
            if (i < 6) {
              const { roles, readAt } = await client().call(m.listRoles, { atLeastAsFresh: change.revision });
              expect({ i, permissions: roles.find((r) => r.name === "Viewer")?.permissions }).toEqual({
                i,
                permissions: expected,
              });
              expect(rev(readAt)).toBeGreaterThanOrEqual(rev(change.revision));
            } else {
              const { status, body } = await postJson("ListRoles", { atLeastAsFresh: change.revision });
              expect(status).toBe(200);
              const roles = body.roles as { name: string; permissions?: string[] }[];
              expect({ i, permissions: roles.find((r) => r.name === "Viewer")?.permissions ?? [] }).toEqual({
                i,
                permissions: expected,
              });
              expect(rev(String(body.readAt))).toBeGreaterThanOrEqual(rev(change.revision));
            }
          }
        } finally {
          watcher.close();
          await sql("DELETE FROM role_permission WHERE id = ?", [id]);
        }
      });

      it("GetProfile at_least_as_fresh = a PROFILE revision from WatchChanges shows a profile FLIP changed by SQL", async () => {
        const user = randomUUID();
        const created = await client().call(m.updateProfile, { userId: user, name: "v0" });
        const watcher = watch(created.writtenAt);
        try {
          for (let i = 1; i <= 6; i++) {
            // Cached before the change, so only the feed can make it right.
            expect((await client().call(m.getProfile, { userId: user })).profile?.name).toBe(`v${i - 1}`);
            await sql("UPDATE user_profile SET name = ? WHERE user_id = ?", [`v${i}`, user]);
            let change = await watcher.next();
            while (change.kind !== ChangeKind.PROFILE) change = await watcher.next();
            const fresh = await client().call(m.getProfile, {
              userId: user,
              atLeastAsFresh: change.revision,
            });
            expect(fresh.profile?.name).toBe(`v${i}`);
            expect(rev(fresh.readAt)).toBeGreaterThanOrEqual(rev(change.revision));
          }
        } finally {
          watcher.close();
        }
      });

      const catalogReads = {
        ListRoles: {
          call: (atLeastAsFresh: string) => client().call(m.listRoles, { atLeastAsFresh }),
          fail: (atLeastAsFresh: string) => client().fail(m.listRoles, { atLeastAsFresh }),
        },
        ListPermissions: {
          call: (atLeastAsFresh: string) => client().call(m.listPermissions, { atLeastAsFresh }),
          fail: (atLeastAsFresh: string) => client().fail(m.listPermissions, { atLeastAsFresh }),
        },
      };

      it.each(["ListRoles", "ListPermissions"] as const)(
        "%s refuses a malformed or unwritten at_least_as_fresh, naming the field",
        async (name) => {
          const read = catalogReads[name];
          expect(await read.fail("soon")).toEqual({
            code: S.INVALID_ARGUMENT,
            details: `at_least_as_fresh: ${REVISION_MESSAGE}`,
          });
          const latest = rev((await read.call("")).readAt);
          const future = (latest + 1_000_000n).toString();
          const status = await read.fail(future);
          expect(status.code).toBe(S.INVALID_ARGUMENT);
          expect(status.details).toMatch(
            new RegExp(
              `^at_least_as_fresh: revision ${future} has not been written \\(the latest is \\d+\\)$`,
            ),
          );
        },
      );

      it("GetProfile refuses a malformed or unwritten at_least_as_fresh, naming the field", async () => {
        const user = randomUUID();
        const written = await assign(user, "Viewer");
        expect(await client().fail(m.getProfile, { userId: user, atLeastAsFresh: "x" })).toEqual({
          code: S.INVALID_ARGUMENT,
          details: `at_least_as_fresh: ${REVISION_MESSAGE}`,
        });
        const future = (rev(written.writtenAt) + 1_000_000n).toString();
        const status = await client().fail(m.getProfile, { userId: user, atLeastAsFresh: future });
        expect(status.code).toBe(S.INVALID_ARGUMENT);
        expect(status.details).toMatch(
          new RegExp(`^at_least_as_fresh: revision ${future} has not been written`),
        );
      });
    });

    describe("rows written by FLIP directly", () => {
      const at = (iso: string) => (db.kind === "postgres" ? iso : Date.parse(iso));

      it("pages through audit rows that share a millisecond (FLIP writes microseconds) without gaps or repeats", async () => {
        const user = randomUUID();
        const ids: string[] = [];
        for (let i = 0; i < 6; i++) {
          const id = randomUUID();
          ids.push(id);
          await sql(
            'INSERT INTO users_audit (id, action, user_id, modified_by_user_id, "timestamp") VALUES (?, ?, ?, ?, ?)',
            [id, "Registered user", user, NIL, at(`2026-01-01T00:00:00.123${i}00Z`)],
          );
        }
        for (const pageSize of [1, 2, 4]) {
          const seen: string[] = [];
          let token = "";
          let pages = 0;
          do {
            const page = await client().call(m.listAuditEvents, { userId: user, pageSize, pageToken: token });
            seen.push(...page.events.map((e) => e.id));
            token = page.nextPageToken;
            pages++;
          } while (token !== "" && pages < 20);
          expect([...seen].sort()).toEqual([...ids].sort());
          expect(new Set(seen).size).toBe(6);
        }
        const { events } = await client().call(m.listAuditEvents, { userId: user });
        expect(events[0]?.action).toBe("Registered user");
        expect(events[0]?.timestamp && timestampDate(events[0].timestamp).toISOString()).toBe(
          "2026-01-01T00:00:00.123Z",
        );
      });

      it("honours a role and a permission added by plain SQL", async () => {
        const roleId = randomUUID();
        const permissionId = randomUUID();
        const now = at(new Date().toISOString());
        await sql("INSERT INTO permission (id, permission_name, permission_description) VALUES (?, ?, ?)", [
          permissionId,
          "CAN_AUDIT_SITES",
          "Audit sites",
        ]);
        await sql(
          "INSERT INTO roles (id, name, description, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
          [roleId, "Auditor", "Audits things.", now, now],
        );
        await sql("INSERT INTO role_permission (id, role_id, permission_id) VALUES (?, ?, ?)", [
          randomUUID(),
          roleId,
          permissionId,
        ]);
        const user = randomUUID();
        // At once, by name in another case: the role is looked up in the database when the cache lacks it.
        expect(await assign(user, "auditor")).toMatchObject({ changed: true, roles: ["Auditor"] });
        const full = await check(user, "can_audit_sites", { fullyConsistent: true });
        expect(full).toMatchObject({ allowed: true, grantedBy: ["Auditor"] });
        await eventually(async () => {
          const { roles } = await client().call(m.listRoles, {});
          return roles.some((r) => r.name === "Auditor");
        });
        const { roles } = await client().call(m.listRoles, {});
        expect(roles.map((r) => r.name)).toEqual(["Admin", "Auditor", "Researcher", "Viewer"]);
        expect(roles.find((r) => r.name === "Auditor")).toMatchObject({
          id: roleId,
          description: "Audits things.",
          permissions: ["CAN_AUDIT_SITES"],
        });
        expect(await check(user, "CAN_AUDIT_SITES")).toMatchObject({ allowed: true, grantedBy: ["Auditor"] });
        expect(await check(user, permissionId.toUpperCase())).toMatchObject({ allowed: true });
        const { permissions } = await client().call(m.listPermissions, {});
        expect(permissions.map((p) => p.name)).toContain("CAN_AUDIT_SITES");
        expect((await client().call(m.getProfile, { userId: user })).profile).toMatchObject({
          roles: ["Auditor"],
          permissions: ["CAN_AUDIT_SITES"],
        });
        // Leave the catalog as FLIP seeds it for the listing tests.
        await setRoles(user, []);
        await sql("DELETE FROM roles WHERE id = ?", [roleId]);
        await sql("DELETE FROM permission WHERE id = ?", [permissionId]);
        await eventually(async () => (await client().call(m.listRoles, {})).roles.length === 3);
      });

      it("lists a role's permission once when FLIP stored the pair twice", async () => {
        const user = randomUUID();
        await assign(user, "Researcher");
        const id = randomUUID();
        const reloads = t.app.reader.stats.catalogReloads;
        await sql("INSERT INTO role_permission (id, role_id, permission_id) VALUES (?, ?, ?)", [
          id,
          RESEARCHER_ID,
          CAN_CREATE_PROJECTS_ID,
        ]);
        try {
          await eventually(async () => t.app.reader.stats.catalogReloads > reloads);
          const fresh = await check(user, "CAN_CREATE_PROJECTS", { fullyConsistent: true });
          expect(fresh).toMatchObject({ allowed: true, grantedBy: ["Researcher"] });
          const { roles } = await client().call(m.listRoles, {});
          expect(roles.find((r) => r.name === "Researcher")?.permissions).toEqual(["CAN_CREATE_PROJECTS"]);
          const { profile } = await client().call(m.getProfile, { userId: user });
          expect(profile?.permissions).toEqual(["CAN_CREATE_PROJECTS"]);
          // Removing one of the two rows leaves the permission granted.
          await sql("DELETE FROM role_permission WHERE id = ?", [id]);
          // Once the cache has applied the delete (not after a guessed sleep), cached and database agree.
          expect(await t.app.reader.waitFor(await t.app.store.currentRevision(), 5000)).toBe(true);
          expect(await check(user, "CAN_CREATE_PROJECTS")).toMatchObject({
            allowed: true,
            grantedBy: ["Researcher"],
          });
          expect(await check(user, "CAN_CREATE_PROJECTS", { fullyConsistent: true })).toMatchObject({
            allowed: true,
            grantedBy: ["Researcher"],
          });
        } finally {
          await sql("DELETE FROM role_permission WHERE id = ?", [id]);
        }
      });

      it("follows a role and a permission renamed by plain SQL", async () => {
        const user = randomUUID();
        await assign(user, "Viewer");
        await assign(user, "Researcher");
        await sql("UPDATE roles SET name = ? WHERE id = ?", ["Observer", VIEWER_ID]);
        await sql("UPDATE permission SET permission_name = ? WHERE id = ?", [
          "CAN_START_PROJECTS",
          CAN_CREATE_PROJECTS_ID,
        ]);
        try {
          await eventually(async () => {
            const { roles } = await client().call(m.listRoles, {});
            return roles.some((r) => r.name === "Observer");
          });
          await eventually(async () => {
            const { permissions } = await client().call(m.listPermissions, {});
            return permissions.some((p) => p.name === "CAN_START_PROJECTS");
          });
          expect(await check(user, "can_start_projects")).toMatchObject({
            allowed: true,
            grantedBy: ["Researcher"],
          });
          expect(
            await client().fail(m.checkPermission, { userId: user, permission: "CAN_CREATE_PROJECTS" }),
          ).toEqual({
            code: S.NOT_FOUND,
            details: 'permission: no permission "CAN_CREATE_PROJECTS"',
          });
          expect((await client().call(m.getProfile, { userId: user })).profile?.roles).toEqual([
            "Observer",
            "Researcher",
          ]);
          expect(await revoke(user, "observer")).toMatchObject({ changed: true, roles: ["Researcher"] });
          expect(await assign(user, "OBSERVER")).toMatchObject({
            changed: true,
            roles: ["Observer", "Researcher"],
          });
          expect((await auditRows(user)).map((r) => r.action)).toEqual([
            "Assigned role Viewer",
            "Assigned role Researcher",
            "Revoked role Observer",
            "Assigned role Observer",
          ]);
          expect(await client().fail(m.assignRole, { userId: user, role: "Viewer" })).toEqual({
            code: S.NOT_FOUND,
            details: 'role: no role "Viewer"',
          });
        } finally {
          await sql("UPDATE roles SET name = ? WHERE id = ?", ["Viewer", VIEWER_ID]);
          await sql("UPDATE permission SET permission_name = ? WHERE id = ?", [
            "CAN_CREATE_PROJECTS",
            CAN_CREATE_PROJECTS_ID,
          ]);
        }
        await eventually(async () => {
          const { roles } = await client().call(m.listRoles, {});
          const { permissions } = await client().call(m.listPermissions, {});
          return (
            roles.some((r) => r.name === "Viewer") &&
            permissions.some((p) => p.name === "CAN_CREATE_PROJECTS")
          );
        });
      });

      it("shows a profile FLIP wrote", async () => {
        const user = randomUUID();
        await sql(
          "INSERT INTO user_profile (user_id, name, organisation, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
          [user, "Flip User", "GSTT", at("2025-05-06T07:08:09.010Z"), at("2025-05-06T07:08:09.010Z")],
        );
        const { profile } = await client().call(m.getProfile, { userId: user });
        expect(profile).toMatchObject({ userId: user, name: "Flip User", organisation: "GSTT", roles: [] });
        expect(profile?.createdAt && timestampDate(profile.createdAt).toISOString()).toBe(
          "2025-05-06T07:08:09.010Z",
        );
        const updated = (await client().call(m.updateProfile, { userId: user, organisation: "KCL" })).profile;
        expect(updated).toMatchObject({ name: "Flip User", organisation: "KCL" });
        expect(updated?.createdAt && timestampDate(updated.createdAt).toISOString()).toBe(
          "2025-05-06T07:08:09.010Z",
        );
        expect(updated?.updatedAt && timestampDate(updated.updatedAt).getTime()).toBeGreaterThan(
          Date.parse("2025-05-06T07:08:09.010Z"),
        );
      });
    });

    describe("cache", () => {
      it("serves repeated checks of a warmed-up user with no new cache misses or database reads", async () => {
        const user = randomUUID();
        const written = await assign(user, "Researcher");
        // Steady state: the feed has delivered this write (its invalidation is behind us), then one miss.
        await eventually(async () => t.app.reader.appliedRevision >= Number(written.writtenAt));
        await check(user, "CAN_CREATE_PROJECTS");
        const stats = t.app.reader.stats;
        const before = { ...stats };
        for (let i = 0; i < 50; i++) {
          const answer = await check(user, i % 2 ? "CAN_CREATE_PROJECTS" : "can_manage_users");
          expect(answer.allowed).toBe(i % 2 === 1);
        }
        await client().call(m.checkPermissions, {
          checks: Array(20).fill({ userId: user, permission: "CAN_CREATE_PROJECTS" }),
        });
        expect(stats.misses).toBe(before.misses);
        expect(stats.databaseReads).toBe(before.databaseReads);
        expect(stats.hits).toBe(before.hits + 70);
      });

      it("caches a user with no rows too: repeated denied checks cost no round trip", async () => {
        const user = randomUUID();
        await check(user, "CAN_MANAGE_USERS");
        const stats = t.app.reader.stats;
        const before = { ...stats };
        for (let i = 0; i < 30; i++) expect((await check(user, "CAN_MANAGE_USERS")).allowed).toBe(false);
        expect(stats.misses).toBe(before.misses);
        expect(stats.databaseReads).toBe(before.databaseReads);
        // fully_consistent always reads the database.
        await check(user, "CAN_MANAGE_USERS", { fullyConsistent: true });
        expect(stats.databaseReads).toBe(before.databaseReads + 1);
      });
    });

    describe("Connect JSON over HTTP", () => {
      const post = (method: string, body: unknown) =>
        fetch(`${t.httpBase}/flip.authz.v1.AuthzService/${method}`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(body),
        });

      it("answers CheckPermission and ListRoles as the gRPC listener does", async () => {
        const user = randomUUID();
        await setRoles(user, ["Researcher", "Viewer"]);
        const response = await post("CheckPermission", {
          userId: user.toUpperCase(),
          permission: "can_create_projects",
        });
        expect(response.status).toBe(200);
        const body = (await response.json()) as Record<string, unknown>;
        expect(body.allowed).toBe(true);
        expect(body.grantedBy).toEqual(["Researcher"]);
        expect(String(body.checkedAt)).toMatch(/^\d+$/);
        const denied = await post("CheckPermission", { user_id: user, permission: "CAN_MANAGE_USERS" });
        expect(denied.status).toBe(200);
        const deniedBody = (await denied.json()) as Record<string, unknown>;
        expect(deniedBody.allowed ?? false).toBe(false);
        expect(deniedBody.grantedBy ?? []).toEqual([]);

        const roles = await post("ListRoles", {});
        expect(roles.status).toBe(200);
        const grpcRoles: MessageShape<typeof ListRolesResponseSchema> = await client().call(m.listRoles, {});
        expect(await roles.json()).toEqual(toJson(ListRolesResponseSchema, grpcRoles));
      });

      it("maps an error to the Connect JSON error body with the same message, HTTP 400", async () => {
        const response = await post("CheckPermission", { userId: "nope", permission: "CAN_MANAGE_USERS" });
        expect(response.status).toBe(400);
        expect(response.headers.get("content-type")).toContain("application/json");
        expect(await response.json()).toEqual({
          code: "invalid_argument",
          message: "user_id: must be a UUID",
        });
        const nobody = randomUUID();
        const missing = await post("GetProfile", { userId: nobody });
        expect(missing.status).toBe(404);
        expect(await missing.json()).toEqual({ code: "not_found", message: `user_id: no user ${nobody}` });
      });

      it("serves /healthz, /readyz and /metrics", async () => {
        const health = await fetch(`${t.httpBase}/healthz`);
        expect(health.status).toBe(200);
        await health.arrayBuffer();
        const ready = await fetch(`${t.httpBase}/readyz`);
        expect(ready.status).toBe(200);
        await ready.arrayBuffer();
        const scrape = async () => {
          const metrics = await fetch(`${t.httpBase}/metrics`);
          expect(metrics.status).toBe(200);
          expect(metrics.headers.get("content-type")).toContain("text/plain");
          const text = await metrics.text();
          const hits = /^authz_cache_hits(?:_total)? (\d+)/m.exec(text);
          const handled = [...text.matchAll(/^grpc_server_handled_total\{([^}]*)\} (\d+)/gm)]
            .filter(
              ([, labels]) =>
                labels?.includes('grpc_method="CheckPermission"') && labels.includes('grpc_code="OK"'),
            )
            .map(([, , value]) => Number(value));
          return { hits: Number(hits?.[1]), handled: handled.reduce((a, b) => a + b, 0) };
        };
        const user = randomUUID();
        await check(user, "CAN_MANAGE_USERS");
        const before = await scrape();
        for (let i = 0; i < 3; i++) await check(user, "CAN_MANAGE_USERS");
        const after = await scrape();
        expect(after.hits - before.hits).toBe(3);
        expect(after.handled - before.handled).toBe(3);
      });
    });

    describe("INTERNAL", () => {
      it("answers 'internal error' without SQL or stack when a table has gone, and recovers", async () => {
        await client().call(m.updateProfile, { userId: randomUUID(), name: "Audited" });
        await sql("ALTER TABLE users_audit RENAME TO users_audit_away");
        let status: { code: number; details: string };
        let http: Response;
        let body: string;
        try {
          status = await client().fail(m.listAuditEvents, {});
          http = await fetch(`${t.httpBase}/flip.authz.v1.AuthzService/ListAuditEvents`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: "{}",
          });
          body = await http.text();
        } finally {
          await sql("ALTER TABLE users_audit_away RENAME TO users_audit");
        }
        expect(status).toEqual({ code: S.INTERNAL, details: "internal error" });
        expect(http.status).toBe(500);
        expect(JSON.parse(body)).toEqual({ code: "internal", message: "internal error" });
        expect((await client().call(m.listAuditEvents, { pageSize: 1 })).events).toHaveLength(1);
      });
    });
  });
}
