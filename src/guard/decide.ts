// The decision for one HTTP request (SIDECARS.md §2), the same for every transport that asks (Envoy's
// ext_authz, /forward-auth, /ext-authz): reject bad paths, find the first matching route, then verify the
// user and their permission through the callbacks it is given. Deny by default; fail closed.

import { UnauthenticatedError } from "../authz/errors.ts";
import { parseRequestPath } from "./path.ts";
import type { RouteTable } from "./routes.ts";

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
  /** Told about anything unexpected (the decision is then `error`). */
  onError(error: unknown): void;
}

/** Never rejects: anything unexpected is an `error` decision (fail closed), told to `onError`. */
export type RouteGuard = (request: GuardRequest) => Promise<Decision>;

const NO_ROUTE = "no route allows this request";
const NOT_HELD = "the user does not hold the permission this route needs";
const UNDECIDED = "the request could not be authorized now";

export function createRouteGuard(options: RouteGuardOptions): RouteGuard {
  const { routes, verifyUser, holds, onError } = options;
  return async (request) => {
    let route = "none";
    try {
      const path = parseRequestPath(request.path);
      if (!path.ok) return { kind: "deny", route, userId: "", message: path.reason };
      const matched = routes.match(request.method, path.segments);
      if (matched === undefined) return { kind: "deny", route, userId: "", message: NO_ROUTE };
      route = matched.path;
      const access = matched.access;
      if (access.kind === "public") return { kind: "allow", route, userId: "", message: "" };
      let userId: string;
      try {
        userId = await verifyUser(request.authorization);
      } catch (error) {
        if (!(error instanceof UnauthenticatedError)) throw error;
        return { kind: "unauthenticated", route, userId: "", message: error.message };
      }
      if (access.kind === "authenticated" || (await holds(userId, access.permission))) {
        return { kind: "allow", route, userId, message: "" };
      }
      return { kind: "deny", route, userId: "", message: NOT_HELD };
    } catch (error) {
      onError(error);
      return { kind: "error", route, userId: "", message: UNDECIDED };
    }
  };
}
