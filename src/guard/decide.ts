// The decision for one HTTP request (SIDECARS.md §2), the same for every transport that asks (Envoy's
// ext_authz, /forward-auth, /ext-authz): reject bad paths, find the first matching route, then verify the
// user and their permission through the callbacks it is given. Deny by default; fail closed.

import { UnauthenticatedError } from "../authz/errors.ts";
import { parseRequestPath } from "./path.ts";
import type { Access, RouteTable } from "./routes.ts";

/** The original request, as a proxy describes it. */
export interface GuardRequest {
  method: string;
  /** The raw request target: path (not decoded) and maybe a query. */
  path: string;
  /** The original request's `authorization` header; undefined when absent. */
  authorization: string | undefined;
}

export type DecisionKind = "allow" | "deny" | "unauthenticated" | "error";

export interface Decision {
  kind: DecisionKind;
  /** The matched route's path pattern, or "none": the `route` label of the decision metric. */
  route: string;
  /** On allow: the user's id (lower case), or "" on a public route. */
  userId: string;
  /** On a denial: a short reason for the client, naming no secret and no internal detail. */
  message: string;
}

export interface RouteGuardOptions {
  routes: RouteTable;
  /** The user (lower-case sub) behind an `authorization` header; throws UnauthenticatedError when none is. */
  verifyUser(authorization: string | undefined): Promise<string>;
  /** Whether the user holds the permission (a name or UUID); false when no such permission exists now. */
  holds(userId: string, permission: string): Promise<boolean>;
  /** verifyUser's answer when it is known without waiting (a token verified before), else undefined. */
  verifyUserNow?(authorization: string | undefined): string | undefined;
  /** holds's answer when it is known without waiting (the user is cached), else undefined. */
  holdsNow?(userId: string, permission: string): boolean | undefined;
  /** Told about anything unexpected (the decision is then `error`). */
  onError(error: unknown): void;
}

/**
 * The decision at once when nothing has to be waited for (a public route, or a token and a user the caches
 * know: a sidecar's every request at steady state), else a promise of it. Never throws nor rejects:
 * anything unexpected is an `error` decision (fail closed), told to `onError`.
 */
export type RouteGuard = (request: GuardRequest) => Decision | Promise<Decision>;

const NO_ROUTE = "no route allows this request";
const NOT_HELD = "the user does not hold the permission this route needs";
const UNDECIDED = "the request could not be authorized now";

export function createRouteGuard(options: RouteGuardOptions): RouteGuard {
  const { routes, verifyUser, holds, verifyUserNow, holdsNow, onError } = options;
  const failed = (route: string, error: unknown): Decision => {
    onError(error);
    return { kind: "error", route, userId: "", message: UNDECIDED };
  };
  const decided = (route: string, userId: string, held: boolean): Decision =>
    held
      ? { kind: "allow", route, userId, message: "" }
      : { kind: "deny", route, userId: "", message: NOT_HELD };
  /** What needs a promise: verifying a token, or a user the cache does not hold. */
  const later = async (
    request: GuardRequest,
    route: string,
    access: Exclude<Access, { kind: "public" }>,
  ): Promise<Decision> => {
    try {
      let userId: string;
      try {
        userId = await verifyUser(request.authorization);
      } catch (error) {
        if (!(error instanceof UnauthenticatedError)) throw error;
        return { kind: "unauthenticated", route, userId: "", message: error.message };
      }
      return decided(
        route,
        userId,
        access.kind === "authenticated" || (await holds(userId, access.permission)),
      );
    } catch (error) {
      return failed(route, error);
    }
  };
  return (request) => {
    let route = "none";
    try {
      const path = parseRequestPath(request.path);
      if (!path.ok) return { kind: "deny", route, userId: "", message: path.reason };
      const matched = routes.match(request.method, path.segments);
      if (matched === undefined) return { kind: "deny", route, userId: "", message: NO_ROUTE };
      route = matched.path;
      const access = matched.access;
      if (access.kind === "public") return { kind: "allow", route, userId: "", message: "" };
      const userId = verifyUserNow?.(request.authorization);
      if (userId !== undefined) {
        if (access.kind === "authenticated") return decided(route, userId, true);
        const held = holdsNow?.(userId, access.permission);
        if (held !== undefined) return decided(route, userId, held);
      }
      return later(request, route, access);
    } catch (error) {
      return failed(route, error);
    }
  };
}
