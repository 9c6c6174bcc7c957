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

/** Decides guarded requests; both ways give the same decision for the same request and caches. */
export interface RouteGuard {
  /**
   * The decision at once when nothing has to be waited for (a bad path, no route, a public route, or a
   * token and a user the caches know: a sidecar's every request at steady state), else undefined: then
   * call `decide`. Never throws and never logs (what goes wrong here is met again, and told, by `decide`),
   * so a caller need not set up a request's logging scope for it.
   */
  now(request: GuardRequest): Decision | undefined;
  /** The decision. Never rejects: anything unexpected is an `error` decision (fail closed), told to `onError`. */
  decide(request: GuardRequest): Promise<Decision>;
}

const NO_ROUTE = "no route allows this request";
const NOT_HELD = "the user does not hold the permission this route needs";
const UNDECIDED = "the request could not be authorized now";

/** A route that needs a user: the next step for both ways of deciding. */
interface NeedsUser {
  route: string;
  access: Exclude<Access, { kind: "public" }>;
}

export function createRouteGuard(options: RouteGuardOptions): RouteGuard {
  const { routes, verifyUser, holds, verifyUserNow, holdsNow, onError } = options;
  /** The path and the route table's part: a decision already, or the route that needs a user. May throw. */
  const route = (request: GuardRequest): Decision | NeedsUser => {
    const path = parseRequestPath(request.path);
    if (!path.ok) return { kind: "deny", route: "none", userId: "", message: path.reason };
    const matched = routes.match(request.method, path.segments);
    if (matched === undefined) return { kind: "deny", route: "none", userId: "", message: NO_ROUTE };
    const access = matched.access;
    if (access.kind === "public") return { kind: "allow", route: matched.path, userId: "", message: "" };
    return { route: matched.path, access };
  };
  const decided = (route: string, userId: string, held: boolean): Decision =>
    held
      ? { kind: "allow", route, userId, message: "" }
      : { kind: "deny", route, userId: "", message: NOT_HELD };
  return {
    now(request) {
      try {
        const step = route(request);
        if ("kind" in step) return step;
        const userId = verifyUserNow?.(request.authorization);
        if (userId === undefined) return undefined;
        if (step.access.kind === "authenticated") return decided(step.route, userId, true);
        const held = holdsNow?.(userId, step.access.permission);
        return held === undefined ? undefined : decided(step.route, userId, held);
      } catch {
        return undefined;
      }
    },
    async decide(request) {
      let matched = "none";
      try {
        const step = route(request);
        if ("kind" in step) return step;
        matched = step.route;
        let userId: string;
        try {
          userId = await verifyUser(request.authorization);
        } catch (error) {
          if (!(error instanceof UnauthenticatedError)) throw error;
          return { kind: "unauthenticated", route: matched, userId: "", message: error.message };
        }
        const access = step.access;
        return decided(
          matched,
          userId,
          access.kind === "authenticated" || (await holds(userId, access.permission)),
        );
      } catch (error) {
        onError(error);
        return { kind: "error", route: matched, userId: "", message: UNDECIDED };
      }
    },
  };
}
