// Who may call what (API.md "Callers and credentials"), as one pure function of the caller, the RPC and the
// users the request is about. No transport, no database: whether an actor holds CAN_MANAGE_USERS is asked
// through a callback, and only when the answer matters.

import { PermissionDeniedError } from "../authz/errors.ts";
import { NIL_UUID } from "../authz/ids.ts";
import type { Caller } from "./authenticator.ts";

export const RPC_METHODS = [
  "CheckPermission",
  "CheckPermissions",
  "AssignRole",
  "RevokeRole",
  "SetUserRoles",
  "GetProfile",
  "UpdateProfile",
  "ListRoles",
  "ListPermissions",
  "ListAuditEvents",
  "WatchChanges",
] as const;

export type RpcMethod = (typeof RPC_METHODS)[number];

/** The calls that change something (the rest only read). */
export const WRITE_METHODS: ReadonlySet<string> = new Set<RpcMethod>([
  "AssignRole",
  "RevokeRole",
  "SetUserRoles",
  "UpdateProfile",
]);

/** Whether the user `actorId` holds CAN_MANAGE_USERS (an up-to-date check; errors propagate). */
export type CanManageUsers = (actorId: string) => Promise<boolean>;

/**
 * How each RPC is guarded:
 * - `catalog`: any authenticated caller (ListRoles, ListPermissions).
 * - `self`: a user about themself, a manager about anyone, a service about anyone if `serviceMay`.
 * - `manager`: a user holding CAN_MANAGE_USERS, a service if `serviceMay`.
 */
type Rule = { guard: "catalog" } | { guard: "self" | "manager"; serviceMay: boolean };

const RULES: Record<RpcMethod, Rule> = {
  CheckPermission: { guard: "self", serviceMay: true },
  CheckPermissions: { guard: "self", serviceMay: true },
  GetProfile: { guard: "self", serviceMay: true },
  // A write: service tokens "may not write".
  UpdateProfile: { guard: "self", serviceMay: false },
  AssignRole: { guard: "manager", serviceMay: false },
  RevokeRole: { guard: "manager", serviceMay: false },
  SetUserRoles: { guard: "manager", serviceMay: false },
  // A read RPC, so services may; the CAN_MANAGE_USERS rule is for user actors.
  ListAuditEvents: { guard: "manager", serviceMay: true },
  // Services may by the contract. Users are not named there; the stream reveals whose roles and profiles
  // change across all users, so a user needs CAN_MANAGE_USERS (deny by default).
  WatchChanges: { guard: "manager", serviceMay: true },
  ListRoles: { guard: "catalog" },
  ListPermissions: { guard: "catalog" },
};

const MANAGE = "CAN_MANAGE_USERS";

/**
 * Decides whether `caller` may call `method` about `targetUserIds` (every user_id in the request: one for
 * GetProfile/UpdateProfile/CheckPermission, one per check for CheckPermissions, none otherwise). Returns
 * the actor id to record as modified_by_user_id: the user's id, or the nil UUID for a service or in open
 * mode. Throws PermissionDeniedError saying what was missing.
 */
export async function authorize(
  caller: Caller,
  method: RpcMethod,
  targetUserIds: readonly string[],
  canManageUsers: CanManageUsers,
): Promise<string> {
  const decided = authorizeNow(caller, method, targetUserIds);
  if (decided !== undefined) return decided;
  // Only a user who is not the call's subject gets here (authorizeNow decided everything else).
  const actor = (caller as { userId: string }).userId.toLowerCase();
  if (await canManageUsers(actor)) return actor;
  const rule = RULES[method];
  throw new PermissionDeniedError(
    rule.guard === "self" ? `${method} about another user needs ${MANAGE}` : `${method} needs ${MANAGE}`,
  );
}

/**
 * authorize without waiting: the actor when the answer needs no look-up (open mode, a service, a user
 * about themself or the catalog), undefined when it turns on whether a user holds CAN_MANAGE_USERS.
 * Throws PermissionDeniedError as authorize does.
 */
export function authorizeNow(
  caller: Caller,
  method: RpcMethod,
  targetUserIds: readonly string[],
): string | undefined {
  // Own properties only: "toString" or "constructor" must not find a rule on the prototype.
  const rule = Object.hasOwn(RULES, method) ? RULES[method] : undefined;
  if (rule === undefined) throw new PermissionDeniedError(`${String(method)} is not a known method`);
  switch (caller.kind) {
    case "anonymous":
      // Open mode: nothing configured, everything allowed (the start check keeps it on loopback).
      return NIL_UUID;
    case "service":
      if (rule.guard === "catalog" || rule.serviceMay) return NIL_UUID;
      throw new PermissionDeniedError(`service tokens may not call ${method} (it writes); use a user token`);
    case "user": {
      const actor = caller.userId.toLowerCase();
      if (rule.guard === "catalog") return actor;
      if (rule.guard === "self" && targetUserIds.every((target) => target.toLowerCase() === actor))
        return actor;
      return undefined;
    }
    default:
      throw new PermissionDeniedError("unknown caller");
  }
}
