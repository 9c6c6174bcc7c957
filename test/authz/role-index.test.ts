import { describe, expect, it } from "vitest";
import { InvalidArgumentError } from "../../src/authz/errors.ts";
import { ADMIN_ROLE_ID, PERMISSIONS, ROLES } from "../../src/authz/flip.ts";
import { Lru } from "../../src/authz/lru.ts";
import { formatRevision, parseRevision } from "../../src/authz/revision.ts";
import { RoleIndex } from "../../src/authz/role-index.ts";
import type { Catalog } from "../../src/authz/store.ts";

const RESEARCHER = "10b64ed0-bc90-4c01-9cc3-933c704905c1";
const VIEWER = "cdee79c9-a5e1-4b9e-a315-1ec2f3d29efe";
const CUSTOM = "0f9a7d6c-5b4a-4392-8170-6f5e4d3c2b1a";
const CUSTOM_PERMISSION = "aa8c7e6d-1234-4abc-9def-001122334455";

/** FLIP's catalog plus an operator's role "admin" (lower case) and a permission added by hand. */
function catalog(): Catalog {
  return {
    revision: 7,
    permissions: [
      ...Object.entries(PERMISSIONS).map(([name, id]) => ({ id, name, description: name })),
      { id: CUSTOM_PERMISSION, name: "CAN_EXPORT", description: "Export results" },
    ],
    roles: [
      ...ROLES.map((role) => ({
        id: role.id,
        name: role.name,
        description: role.description,
        permissionIds: role.permissions.map((name) => PERMISSIONS[name]),
      })),
      // A pair pointing at a permission that no longer exists is ignored.
      { id: CUSTOM, name: "admin", description: "look-alike", permissionIds: [CUSTOM_PERMISSION, "gone"] },
    ],
  };
}

describe("the role index (the matrix of roles × permissions × users)", () => {
  const index = new RoleIndex(catalog());

  it("resolves references: exact name first, then any case, or the UUID in any case", () => {
    expect(index.resolveRole("Admin")?.id).toBe(ADMIN_ROLE_ID);
    expect(index.resolveRole("admin")?.id).toBe(CUSTOM);
    expect(index.resolveRole("ADMIN")?.id).toBe(ADMIN_ROLE_ID);
    expect(index.resolveRole("researcher")?.id).toBe(RESEARCHER);
    expect(index.resolveRole(VIEWER.toUpperCase())?.name).toBe("Viewer");
    expect(index.resolveRole("Overlord")).toBeUndefined();
    expect(index.resolvePermission("can_manage_users")?.id).toBe(PERMISSIONS.CAN_MANAGE_USERS);
    expect(index.resolvePermission(PERMISSIONS.CAN_CREATE_PROJECTS.toUpperCase())?.name).toBe(
      "CAN_CREATE_PROJECTS",
    );
    expect(index.resolvePermission("CAN_FLY")).toBeUndefined();
  });

  it.each([
    { roles: [ADMIN_ROLE_ID], permission: "CAN_MANAGE_USERS", grantedBy: ["Admin"] },
    { roles: [RESEARCHER], permission: "CAN_MANAGE_USERS", grantedBy: [] },
    { roles: [RESEARCHER], permission: "CAN_CREATE_PROJECTS", grantedBy: ["Researcher"] },
    {
      roles: [RESEARCHER, ADMIN_ROLE_ID],
      permission: "CAN_CREATE_PROJECTS",
      grantedBy: ["Admin", "Researcher"],
    },
    { roles: [VIEWER], permission: "CAN_CREATE_PROJECTS", grantedBy: [] },
    { roles: [], permission: "CAN_CREATE_PROJECTS", grantedBy: [] },
    { roles: [CUSTOM, VIEWER], permission: "CAN_EXPORT", grantedBy: ["admin"] },
    { roles: ["deleted-role"], permission: "CAN_EXPORT", grantedBy: [] },
  ])("roles $roles → $permission granted by $grantedBy", ({ roles, permission, grantedBy }) => {
    const resolved = index.resolvePermission(permission);
    expect(resolved).toBeDefined();
    expect(index.grantedBy(index.rolesOf(roles), resolved?.id ?? "")).toEqual(grantedBy);
  });

  it("lists roles and permissions sorted by name, permissions of a role sorted", () => {
    expect(index.roles.map((role) => role.name)).toEqual(["Admin", "Researcher", "Viewer", "admin"]);
    expect(index.roles[0]?.permissionNames).toEqual(Object.keys(PERMISSIONS).sort());
    expect(index.roles[3]?.permissionNames).toEqual(["CAN_EXPORT"]);
    expect(index.permissions.map((p) => p.name)).toEqual([...Object.keys(PERMISSIONS), "CAN_EXPORT"].sort());
    expect(index.revision).toBe(7);
  });

  it("gives a user's effective permissions as a sorted union", () => {
    expect(index.effectivePermissions(index.rolesOf([CUSTOM, RESEARCHER]))).toEqual([
      "CAN_CREATE_PROJECTS",
      "CAN_EXPORT",
    ]);
    expect(index.effectivePermissions([])).toEqual([]);
  });
});

describe("revisions", () => {
  it("round-trip and refuse anything not ours, naming the field", () => {
    expect(parseRevision(formatRevision(42), "after")).toBe(42);
    expect(parseRevision("", "after")).toBeUndefined();
    for (const bad of ["-1", "1.5", "abc", "0x10", " 1", "1234567890123456"]) {
      expect(() => parseRevision(bad, "checks[2].at_least_as_fresh")).toThrow(
        new InvalidArgumentError(
          "checks[2].at_least_as_fresh",
          "must be a revision (from written_at, read_at, checked_at or WatchChanges)",
        ),
      );
    }
  });
});

describe("the LRU", () => {
  it("evicts the least recently used and keeps what was read", () => {
    const lru = new Lru<string, number>(2);
    lru.set("a", 1);
    lru.set("b", 2);
    expect(lru.get("a")).toBe(1);
    lru.set("c", 3);
    expect(lru.get("b")).toBeUndefined();
    expect(lru.get("a")).toBe(1);
    expect(lru.get("c")).toBe(3);
    expect(lru.size).toBe(2);
  });

  it("stores nothing with capacity 0", () => {
    const lru = new Lru<string, number>(0);
    lru.set("a", 1);
    expect(lru.get("a")).toBeUndefined();
  });
});
