// The route decision (src/guard/decide.ts) over a real route table: what it decides, and that a request
// whose token and user the caches know is decided at once, without a promise (a sidecar's every request at
// steady state), with the same decision the waiting path gives.

import { describe, expect, it } from "vitest";
import { UnauthenticatedError } from "../../src/authz/errors.ts";
import { createRouteGuard, type Decision, type RouteGuardOptions } from "../../src/guard/decide.ts";
import { parseRouteTable } from "../../src/guard/routes.ts";

const routes = parseRouteTable(
  `
routes:
  - path: /api/health
    public: true
  - path: /api/projects
    methods: [POST]
    permission: CAN_CREATE_PROJECTS
  - path: /api/me/**
    authenticated: true
`,
  "routes.yaml",
);

const ALICE = "6f0c1f4e-2a53-4c7e-9d8b-0a1b2c3d4e5f";
const TOKEN = "Bearer alice-token";
/** Alice, with her token, holds CAN_CREATE_PROJECTS; any other token is refused. */
const HELD = new Map([[ALICE, new Set(["CAN_CREATE_PROJECTS"])]]);

function options(known: { tokens: boolean; users: boolean }, errors: unknown[] = []): RouteGuardOptions {
  const verify = (authorization: string | undefined) => {
    if (authorization !== TOKEN)
      throw new UnauthenticatedError("invalid token: signature verification failed");
    return ALICE;
  };
  return {
    routes,
    verifyUser: async (authorization) => verify(authorization),
    holds: async (userId, permission) => HELD.get(userId)?.has(permission) ?? false,
    verifyUserNow: (authorization) => (known.tokens && authorization === TOKEN ? ALICE : undefined),
    holdsNow: (userId, permission) =>
      known.users ? (HELD.get(userId)?.has(permission) ?? false) : undefined,
    onError: (error) => errors.push(error),
  };
}

const REQUESTS = [
  { method: "POST", path: "/api/projects", authorization: TOKEN },
  { method: "POST", path: "/api/projects", authorization: "Bearer someone-else" },
  { method: "POST", path: "/api/projects", authorization: undefined },
  { method: "GET", path: "/api/me/settings", authorization: TOKEN },
  { method: "GET", path: "/api/health", authorization: undefined },
  { method: "GET", path: "/api/projects", authorization: TOKEN },
  { method: "GET", path: "/api/../etc/passwd", authorization: TOKEN },
];

describe("route decisions", () => {
  it("known token and user: decided at once, as the waiting path decides", async () => {
    const now = createRouteGuard(options({ tokens: true, users: true }));
    const waiting = createRouteGuard(options({ tokens: false, users: false }));
    for (const request of REQUESTS) {
      const decided = now(request);
      const awaited = waiting(request);
      // Alice's token is known: never a promise. Others' tokens are not, and take the waiting path.
      expect(decided instanceof Promise, `${request.method} ${request.path}`).toBe(
        request.authorization !== TOKEN &&
          request.path.startsWith("/api/projects") &&
          request.method === "POST",
      );
      expect(await decided).toEqual(await awaited);
    }
    const decisions = await Promise.all(REQUESTS.map((request) => waiting(request)));
    expect(decisions.map((d: Decision) => d.kind)).toEqual([
      "allow",
      "unauthenticated",
      "unauthenticated",
      "allow",
      "allow",
      "deny",
      "deny",
    ]);
    expect(decisions[0]).toEqual({ kind: "allow", route: "/api/projects", userId: ALICE, message: "" });
  });

  it("a known token of a user the cache does not hold waits for the user", async () => {
    const guard = createRouteGuard(options({ tokens: true, users: false }));
    const permission = guard(REQUESTS[0] as (typeof REQUESTS)[0]);
    expect(permission).toBeInstanceOf(Promise);
    expect(await permission).toMatchObject({ kind: "allow", userId: ALICE });
    // A route that needs only a verified user needs no user lookup.
    expect(guard(REQUESTS[3] as (typeof REQUESTS)[0])).toMatchObject({ kind: "allow", userId: ALICE });
  });

  it("what throws at once is an error decision (fail closed), told to onError, never a throw", () => {
    const errors: unknown[] = [];
    const guard = createRouteGuard({
      ...options({ tokens: true, users: true }, errors),
      holdsNow: () => {
        throw new Error("the index is broken");
      },
    });
    expect(guard(REQUESTS[0] as (typeof REQUESTS)[0])).toEqual({
      kind: "error",
      route: "/api/projects",
      userId: "",
      message: "the request could not be authorized now",
    });
    expect(errors).toEqual([new Error("the index is broken")]);
  });
});
