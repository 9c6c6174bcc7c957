// The authorization matrix of API.md "Callers and credentials", caller kind × method × about self or
// another user × holds CAN_MANAGE_USERS, each cell pinned to allowed or denied.

import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import type { Caller } from "../../src/auth/authenticator.ts";
import { authorize, authorizeNow, RPC_METHODS, type RpcMethod } from "../../src/auth/rules.ts";
import { PermissionDeniedError } from "../../src/authz/errors.ts";
import { NIL_UUID } from "../../src/authz/ids.ts";

type Verdict = "allow" | "deny";
type Target = "self" | "other";

/** Expected verdicts for a user: [about self without CAN_MANAGE_USERS, about another without, with it]. */
const USER: Record<RpcMethod, { self: Verdict; other: Verdict; manager: Verdict }> = {
  CheckPermission: { self: "allow", other: "deny", manager: "allow" },
  CheckPermissions: { self: "allow", other: "deny", manager: "allow" },
  GetProfile: { self: "allow", other: "deny", manager: "allow" },
  UpdateProfile: { self: "allow", other: "deny", manager: "allow" },
  AssignRole: { self: "deny", other: "deny", manager: "allow" },
  RevokeRole: { self: "deny", other: "deny", manager: "allow" },
  SetUserRoles: { self: "deny", other: "deny", manager: "allow" },
  ListAuditEvents: { self: "deny", other: "deny", manager: "allow" },
  WatchChanges: { self: "deny", other: "deny", manager: "allow" },
  ListRoles: { self: "allow", other: "allow", manager: "allow" },
  ListPermissions: { self: "allow", other: "allow", manager: "allow" },
};

const SERVICE: Record<RpcMethod, Verdict> = {
  CheckPermission: "allow",
  CheckPermissions: "allow",
  GetProfile: "allow",
  ListRoles: "allow",
  ListPermissions: "allow",
  ListAuditEvents: "allow",
  WatchChanges: "allow",
  UpdateProfile: "deny",
  AssignRole: "deny",
  RevokeRole: "deny",
  SetUserRoles: "deny",
};

/** The user ids a request to `method` carries. */
function targets(method: RpcMethod, user: string): string[] {
  switch (method) {
    case "ListRoles":
    case "ListPermissions":
    case "WatchChanges":
      return [];
    case "CheckPermissions":
      return [user, user];
    default:
      return [user];
  }
}

const ME = randomUUID();
const SOMEONE = randomUUID();

interface Row {
  caller: Caller["kind"];
  method: RpcMethod;
  target: Target;
  manager: boolean;
  expected: Verdict;
}

const rows: Row[] = [];
for (const method of RPC_METHODS) {
  for (const target of ["self", "other"] as const) {
    for (const manager of [false, true]) {
      const user = USER[method];
      rows.push({
        caller: "user",
        method,
        target,
        manager,
        expected: manager ? user.manager : user[target],
      });
      rows.push({ caller: "service", method, target, manager, expected: SERVICE[method] });
      rows.push({ caller: "anonymous", method, target, manager, expected: "allow" });
    }
  }
}

describe("authorize", () => {
  it("covers every method", () => {
    expect(Object.keys(USER).sort()).toEqual([...RPC_METHODS].sort());
    expect(rows).toHaveLength(RPC_METHODS.length * 2 * 2 * 3);
  });

  it.each(rows)("$caller $method about $target (manager: $manager) → $expected", async (row) => {
    const caller: Caller =
      row.caller === "user"
        ? { kind: "user", userId: ME }
        : row.caller === "service"
          ? { kind: "service" }
          : { kind: "anonymous" };
    const asked: string[] = [];
    const canManageUsers = async (actor: string) => {
      asked.push(actor);
      return row.manager;
    };
    const about = targets(row.method, row.target === "self" ? ME : SOMEONE);
    const outcome = authorize(caller, row.method, about, canManageUsers);
    if (row.expected === "allow") {
      await expect(outcome).resolves.toBe(row.caller === "user" ? ME : NIL_UUID);
    } else {
      const error = await outcome.then(
        () => null,
        (caught: unknown) => caught,
      );
      expect(error).toBeInstanceOf(PermissionDeniedError);
      expect((error as Error).message).toContain(row.method);
    }
    // Only a user is ever looked up, and only as themself.
    for (const actor of asked) expect(actor).toBe(ME);
    if (row.caller !== "user") expect(asked).toEqual([]);
  });
});

describe("authorize details", () => {
  const user: Caller = { kind: "user", userId: ME.toUpperCase() };
  const never = async () => {
    throw new Error("must not be asked");
  };

  it("a user about themself is not looked up, whatever the case of the ids", async () => {
    await expect(authorize(user, "GetProfile", [ME], never)).resolves.toBe(ME);
    await expect(
      authorize({ kind: "user", userId: ME }, "UpdateProfile", [ME.toUpperCase()], never),
    ).resolves.toBe(ME);
    await expect(authorize(user, "ListRoles", [], never)).resolves.toBe(ME);
  });

  it("CheckPermissions with one check about another user needs CAN_MANAGE_USERS", async () => {
    await expect(authorize(user, "CheckPermissions", [ME, SOMEONE, ME], async () => false)).rejects.toThrow(
      "CheckPermissions about another user needs CAN_MANAGE_USERS",
    );
    await expect(authorize(user, "CheckPermissions", [ME, SOMEONE], async () => true)).resolves.toBe(ME);
  });

  it("the messages say what is missing", async () => {
    await expect(authorize(user, "AssignRole", [ME], async () => false)).rejects.toThrow(
      "AssignRole needs CAN_MANAGE_USERS",
    );
    await expect(authorize({ kind: "service" }, "SetUserRoles", [ME], never)).rejects.toThrow(
      "service tokens may not call SetUserRoles",
    );
  });

  it("a failing CAN_MANAGE_USERS lookup propagates (e.g. UNAVAILABLE), it is not a denial", async () => {
    const down = new Error("database down");
    await expect(authorize(user, "AssignRole", [SOMEONE], async () => Promise.reject(down))).rejects.toBe(
      down,
    );
  });

  it("decides at once (authorizeNow) exactly when no CAN_MANAGE_USERS look-up is needed", () => {
    expect(authorizeNow({ kind: "anonymous" }, "AssignRole", [SOMEONE])).toBe(NIL_UUID);
    expect(authorizeNow({ kind: "service" }, "CheckPermission", [SOMEONE])).toBe(NIL_UUID);
    expect(() => authorizeNow({ kind: "service" }, "AssignRole", [SOMEONE])).toThrow(PermissionDeniedError);
    expect(authorizeNow(user, "CheckPermission", [ME])).toBe(ME);
    expect(authorizeNow(user, "ListRoles", [])).toBe(ME);
    expect(authorizeNow(user, "CheckPermission", [SOMEONE])).toBeUndefined();
    expect(authorizeNow(user, "AssignRole", [ME])).toBeUndefined();
  });

  it("an unknown method is denied", async () => {
    for (const method of ["DropTables", "toString", "constructor", "__proto__"]) {
      await expect(authorize({ kind: "service" }, method as RpcMethod, [], never)).rejects.toBeInstanceOf(
        PermissionDeniedError,
      );
      await expect(authorize(user, method as RpcMethod, [], async () => true)).rejects.toBeInstanceOf(
        PermissionDeniedError,
      );
    }
  });
});
