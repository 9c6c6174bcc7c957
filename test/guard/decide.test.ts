// The route decision (src/guard/decide.ts) over a real route table: what it decides, and that a request
// whose token and user the caches know is decided at once (`now`: a sidecar's every request at steady
// state), with the decision the waiting path (`decide`) gives; what `now` cannot decide, or where
// something throws, it leaves to `decide`, which tells onError.

import { describe, expect, it } from "vitest";
import { UnauthenticatedError } from "../../src/authz/errors.ts";
import {
  createRouteGuard,
  type Decision,
  type GuardRequest,
  type RouteGuardOptions,
} from "../../src/guard/decide.ts";
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

const REQUESTS: GuardRequest[] = [
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
    const known = createRouteGuard(options({ tokens: true, users: true }));
    const unknown = createRouteGuard(options({ tokens: false, users: false }));
    const decisions = [];
    for (const request of REQUESTS) {
      const waited = await unknown.decide(request);
      decisions.push(waited);
      expect(await known.decide(request)).toEqual(waited);
      // Alice's token is known: decided at once. Another token on a route needing a user must be verified.
      const needsVerifying =
        request.authorization !== TOKEN && request.path === "/api/projects" && request.method === "POST";
      expect(known.now(request), `${request.method} ${request.path}`).toEqual(
        needsVerifying ? undefined : waited,
      );
    }
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
    // Without the caches, only what needs no user is decided at once.
    expect(REQUESTS.map((request) => unknown.now(request)?.kind)).toEqual([
      undefined,
      undefined,
      undefined,
      undefined,
      "allow",
      "deny",
      "deny",
    ]);
  });

  it("a known token of a user the cache does not hold waits for the user", async () => {
    const guard = createRouteGuard(options({ tokens: true, users: false }));
    const [permission, authenticated] = [REQUESTS[0], REQUESTS[3]] as GuardRequest[];
    expect(guard.now(permission as GuardRequest)).toBeUndefined();
    expect(await guard.decide(permission as GuardRequest)).toMatchObject({ kind: "allow", userId: ALICE });
    // A route that needs only a verified user needs no user lookup.
    expect(guard.now(authenticated as GuardRequest)).toMatchObject({ kind: "allow", userId: ALICE });
  });

  it("what throws is left to decide by now, and decide makes it an error decision told to onError", async () => {
    const errors: unknown[] = [];
    const broken = new Error("the index is broken");
    const guard = createRouteGuard({
      ...options({ tokens: true, users: true }, errors),
      holdsNow: () => {
        throw broken;
      },
      holds: async () => {
        throw broken;
      },
    });
    const request = REQUESTS[0] as GuardRequest;
    expect(guard.now(request)).toBeUndefined();
    expect(errors).toEqual([]);
    expect(await guard.decide(request)).toEqual({
      kind: "error",
      route: "/api/projects",
      userId: "",
      message: "the request could not be authorized now",
    });
    expect(errors).toEqual([broken]);
  });
});
