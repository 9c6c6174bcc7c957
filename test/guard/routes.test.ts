// The route table: SIDECARS.md §1's example file in YAML and JSON, matched against a matrix of requests
// (method × path → route), and every kind of bad file refused with the file, `routes[i]` and the problem.

import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseRequestPath } from "../../src/guard/path.ts";
import { loadRouteTable, parseRouteTable, RouteTableError } from "../../src/guard/routes.ts";
import { tempDir } from "../helpers/keys.ts";

const EXAMPLE = `
routes:
  - path: /api/health
    public: true                      # no token needed
  - path: /api/projects
    methods: [POST]                   # optional; default: every method
    permission: CAN_CREATE_PROJECTS   # a permission name or UUID
  - path: /api/projects/*
    methods: [DELETE]
    permission: CAN_DELETE_ANY_PROJECT
  - path: /api/me/**
    authenticated: true               # any verified user, no permission
  - path: /api/projects/*
    methods: [GET, HEAD]
    authenticated: true
  - path: /
    methods: [GET]
    public: true
  - path: /static/**
    methods: [GET, HEAD, OPTIONS]
    public: true
`;

const table = parseRouteTable(EXAMPLE, "routes.yaml");

/** The matched route's index, or null. */
function matched(method: string, target: string): number | null {
  const path = parseRequestPath(target);
  if (!path.ok) throw new Error(`${target}: ${path.reason}`);
  return table.match(method, path.segments)?.index ?? null;
}

const matrix: [string, string, number | null][] = [
  ["GET", "/api/health", 0],
  ["POST", "/api/health", 0],
  ["GET", "/api/health?verbose=1", 0],
  ["GET", "/api/health/", null],
  ["GET", "/API/health", null],
  ["GET", "/api/Health", null],
  ["GET", "/api/health/x", null],
  ["GET", "/api/healthz", null],
  ["GET", "/api/health;x", null],
  ["GET", "/api/%68ealth", 0],
  ["POST", "/api/projects", 1],
  ["post", "/api/projects", null],
  ["GET", "/api/projects", null],
  ["POST", "/api/projects/", null],
  ["DELETE", "/api/projects/42", 2],
  ["DELETE", "/api/projects/a%20b", 2],
  ["DELETE", "/api/projects/42;x=1", 2],
  ["DELETE", "/api/projects/", null],
  ["DELETE", "/api/projects", null],
  ["DELETE", "/api/projects/42/", null],
  ["DELETE", "/api/projects/42/members", null],
  ["GET", "/api/projects/42", 4],
  ["HEAD", "/api/projects/42", 4],
  ["OPTIONS", "/api/projects/42", null],
  ["GET", "/api/me", 3],
  ["PATCH", "/api/me/", 3],
  ["GET", "/api/me/settings/email", 3],
  ["GET", "/api/me/settings/", 3],
  ["GET", "/api/mex", null],
  ["GET", "/api", null],
  ["GET", "/", 5],
  ["POST", "/", null],
  ["GET", "/static", 6],
  ["OPTIONS", "/static/app.js", 6],
  ["GET", "/other", null],
];

describe("matching", () => {
  it.each(matrix)("%s %s → route %s", (method, target, expected) => {
    expect(matched(method, target)).toBe(expected);
  });

  it("the first matching route wins", () => {
    const overlapping = parseRouteTable(
      JSON.stringify({
        routes: [
          { path: "/a/**", permission: "CAN_MANAGE_USERS" },
          { path: "/a/b", public: true },
        ],
      }),
      "routes.json",
    );
    expect(overlapping.match("GET", ["a", "b"])?.index).toBe(0);
    expect(overlapping.routes.map((route) => route.access)).toEqual([
      { kind: "permission", permission: "CAN_MANAGE_USERS" },
      { kind: "public" },
    ]);
  });

  it("reads JSON files as well as YAML", () => {
    const dir = tempDir();
    const file = join(dir, "routes.json");
    writeFileSync(
      file,
      JSON.stringify({ routes: [{ path: "/x/*", methods: ["GET"], authenticated: true }] }),
    );
    const loaded = loadRouteTable(file);
    expect(loaded.match("GET", ["x", "1"])).toMatchObject({ index: 0, path: "/x/*" });
    expect(loaded.match("GET", ["x"])).toBeUndefined();
  });
});

const bad: [string, string, string][] = [
  ["not YAML", "routes: [", "routes.yaml: not valid JSON or YAML"],
  ["duplicate keys", "routes:\n  - path: /a\n    path: /b\n    public: true\n", "not valid JSON or YAML"],
  ["a list at the top", "- path: /a\n", "routes.yaml: must be a mapping with a routes list"],
  ["an empty file", "", "routes.yaml: must be a mapping with a routes list"],
  ["no routes", "other: 1\n", 'routes.yaml: unknown field "other" (known: routes)'],
  ["routes not a list", "routes: {path: /a}\n", "routes.yaml: routes: required: a list of routes"],
  ["an empty list", "routes: []\n", "routes.yaml: routes: lists no route"],
  ["a route not a mapping", "routes: [/a]\n", "routes.yaml: routes[0]: must be a mapping with a path"],
  ["no path", "routes:\n  - public: true\n", "routes.yaml: routes[0].path: required"],
  ["a path not a string", "routes:\n  - path: 3\n    public: true\n", "routes[0].path: required"],
  ["a relative path", "routes:\n  - path: api\n    public: true\n", "routes[0].path: must start with /"],
  ["a trailing /", "routes:\n  - path: /api/\n    public: true\n", "routes[0].path: must not end in /"],
  ["//", "routes:\n  - path: /a//b\n    public: true\n", "routes[0].path: has an empty segment"],
  [
    ".. in a pattern",
    "routes:\n  - path: /a/../b\n    public: true\n",
    "routes[0].path: has a . or .. segment",
  ],
  [
    "** not last",
    "routes:\n  - path: /a/**/b\n    public: true\n",
    "routes[0].path: ** may only be the last",
  ],
  ["a partial *", "routes:\n  - path: /a/b*\n    public: true\n", "routes[0].path: * and ** must be whole"],
  ["an escape", "routes:\n  - path: /a%2Fb\n    public: true\n", "routes[0].path: may not hold"],
  ["a query", "routes:\n  - path: /a?b\n    public: true\n", "routes[0].path: may not hold"],
  ["a backslash", "routes:\n  - path: '/a\\b'\n    public: true\n", "routes[0].path: may not hold"],
  ["none of the three", "routes:\n  - path: /a\n", "routes[0]: needs exactly one of public"],
  [
    "two of the three",
    "routes:\n  - path: /a\n    public: true\n    permission: CAN_MANAGE_USERS\n",
    "routes[0]: has public and permission; a route has exactly one",
  ],
  ["public: false", "routes:\n  - path: /a\n    public: false\n", "routes[0].public: must be true"],
  ["public: yes", "routes:\n  - path: /a\n    public: 'yes'\n", "routes[0].public: must be true"],
  [
    "authenticated: 1",
    "routes:\n  - path: /a\n    authenticated: 1\n",
    "routes[0].authenticated: must be true",
  ],
  ["an empty permission", "routes:\n  - path: /a\n    permission: ''\n", "routes[0].permission: must be"],
  ["a permission list", "routes:\n  - path: /a\n    permission: [A]\n", "routes[0].permission: must be"],
  ["a typo", "routes:\n  - path: /a\n    permision: X\n", 'routes[0]: unknown field "permision"'],
  [
    "methods not a list",
    "routes:\n  - path: /a\n    methods: GET\n    public: true\n",
    "routes[0].methods: must be a non-empty list",
  ],
  [
    "no methods",
    "routes:\n  - path: /a\n    methods: []\n    public: true\n",
    "routes[0].methods: must be a non-empty list",
  ],
  [
    "lower-case method",
    "routes:\n  - path: /a\n    methods: [get]\n    public: true\n",
    "routes[0].methods[0]: must be upper case, as HTTP sends it (GET)",
  ],
  [
    "a method with a space",
    "routes:\n  - path: /a\n    methods: ['GE T']\n    public: true\n",
    "routes[0].methods[0]: must be upper case",
  ],
  [
    "a method not a string",
    "routes:\n  - path: /a\n    methods: [1]\n    public: true\n",
    "routes[0].methods[0]: must be a method name",
  ],
];

describe("bad route files", () => {
  it.each(bad)("%s: refused naming the file, the route and the problem", (_name, text, message) => {
    const error = (() => {
      try {
        parseRouteTable(text, "routes.yaml");
      } catch (caught) {
        return caught;
      }
      throw new Error("parsed");
    })();
    expect(error).toBeInstanceOf(RouteTableError);
    expect((error as Error).message).toMatch(/^routes\.yaml: /);
    expect((error as Error).message).toContain(message);
  });

  it("names the failing route by its index, counted from 0", () => {
    const text = "routes:\n  - path: /a\n    public: true\n  - path: /b\n  - path: /c\n    public: true\n";
    expect(() => parseRouteTable(text, "routes.yaml")).toThrow(
      "routes.yaml: routes[1]: needs exactly one of public: true, authenticated: true or permission: <name>",
    );
  });

  it("a missing file is refused naming it", () => {
    const file = join(tempDir(), "nope.yaml");
    expect(() => loadRouteTable(file)).toThrow(`${file}: cannot read it (ENOENT)`);
  });
});
