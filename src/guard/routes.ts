// The route table (AUTHZ_ROUTES_FILE, SIDECARS.md §1): parsed from JSON or YAML, validated route by route
// (errors name the file, `routes[i]` and the problem), and matched against a request's method and path.

import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import { hasControl } from "./path.ts";

/** What a route asks of a request: nothing, a verified user, or a user holding a permission. */
export type Access =
  | { kind: "public" }
  | { kind: "authenticated" }
  | { kind: "permission"; permission: string };

export interface Route {
  /** Position in the file, counted from 0. */
  index: number;
  /** The pattern as written (`/api/projects/*`): the route's name in metrics. */
  path: string;
  /** Upper-case methods; null = every method. */
  methods: ReadonlySet<string> | null;
  access: Access;
  /** The pattern split into segments: literals, `*` (one non-empty segment), `**` (the rest, last only). */
  segments: readonly string[];
}

export interface RouteTable {
  /** The file it came from, as errors name it. */
  readonly source: string;
  readonly routes: readonly Route[];
  /** The first route matching the method and decoded path segments (see path.ts), or undefined. */
  match(method: string, segments: readonly string[]): Route | undefined;
}

/** A route file that cannot be used; the message names the file, where in it (`routes[2].path`) and why. */
export class RouteTableError extends Error {
  constructor(source: string, where: string, problem: string) {
    super(`${source}: ${where === "" ? "" : `${where}: `}${problem}`);
  }
}

const FIELDS = ["path", "methods", "public", "authenticated", "permission"] as const;
/** An HTTP method token, upper case (RFC 9110 tchar, letters upper case). */
const METHOD = /^[A-Z0-9!#$%&'*+.^_`|~-]+$/;
/** What a pattern's literal segment may not hold: separators, escapes, query/fragment marks, controls. */
const FORBIDDEN_IN_PATTERN = /[\\%?# ]/;

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Splits and checks a route's path pattern; returns a problem or the segments. */
function compilePattern(pattern: string): string[] | string {
  if (!pattern.startsWith("/")) return "must start with /";
  if (pattern === "/") return [""];
  if (pattern.endsWith("/")) return "must not end in / (only the pattern / itself does)";
  const segments = pattern.slice(1).split("/");
  for (const [i, segment] of segments.entries()) {
    if (segment === "") return "has an empty segment (//)";
    if (segment === "." || segment === "..") return "has a . or .. segment";
    if (segment === "**" && i !== segments.length - 1) return "** may only be the last segment";
    if (segment !== "*" && segment !== "**" && segment.includes("*")) {
      return "* and ** must be whole segments";
    }
    if (FORBIDDEN_IN_PATTERN.test(segment) || hasControl(segment)) {
      return "may not hold spaces, control characters, \\, %, ? or # (write segments decoded)";
    }
  }
  return segments;
}

function segmentsMatch(pattern: readonly string[], path: readonly string[]): boolean {
  const last = pattern.length - 1;
  for (let i = 0; i <= last; i++) {
    const expected = pattern[i];
    // Validated: `**` is last; an acceptable path has empty segments only at its end (a trailing /).
    if (expected === "**" && i === last) return true;
    const actual = path[i];
    if (actual === undefined) return false;
    if (expected === "*") {
      if (actual === "") return false;
    } else if (expected !== actual) {
      return false;
    }
  }
  return path.length === pattern.length;
}

function parseRoute(entry: unknown, index: number, source: string): Route {
  const where = `routes[${index}]`;
  const fail = (field: string, problem: string) =>
    new RouteTableError(source, field === "" ? where : `${where}.${field}`, problem);
  if (!isObject(entry)) throw fail("", "must be a mapping with a path");
  for (const key of Object.keys(entry)) {
    if (!(FIELDS as readonly string[]).includes(key)) {
      throw fail("", `unknown field ${JSON.stringify(key)} (known: ${FIELDS.join(", ")})`);
    }
  }
  const path = entry.path;
  if (typeof path !== "string" || path === "")
    throw fail("path", "required (a string such as /api/projects/*)");
  const segments = compilePattern(path);
  if (typeof segments === "string") throw fail("path", segments);

  let methods: Set<string> | null = null;
  if (entry.methods !== undefined) {
    if (!Array.isArray(entry.methods) || entry.methods.length === 0) {
      throw fail("methods", "must be a non-empty list (leave it out for every method)");
    }
    methods = new Set();
    for (const [i, method] of entry.methods.entries()) {
      if (typeof method !== "string" || method === "") throw fail(`methods[${i}]`, "must be a method name");
      if (!METHOD.test(method)) {
        throw fail(`methods[${i}]`, `must be upper case, as HTTP sends it (${method.toUpperCase()})`);
      }
      methods.add(method);
    }
  }

  const given = (["public", "authenticated", "permission"] as const).filter(
    (key) => entry[key] !== undefined,
  );
  if (given.length !== 1) {
    throw fail(
      "",
      given.length === 0
        ? "needs exactly one of public: true, authenticated: true or permission: <name>"
        : `has ${given.join(" and ")}; a route has exactly one of them`,
    );
  }
  let access: Access;
  if (given[0] === "permission") {
    const permission = entry.permission;
    if (typeof permission !== "string" || permission.trim() === "") {
      throw fail("permission", "must be a permission name or UUID");
    }
    access = { kind: "permission", permission };
  } else {
    const key = given[0] as "public" | "authenticated";
    if (entry[key] !== true) throw fail(key, "must be true (leave it out otherwise)");
    access = { kind: key };
  }
  return { index, path, methods, access, segments };
}

/** Builds the table for already-parsed `document` (the file's content); `source` names it in errors. */
export function createRouteTable(document: unknown, source: string): RouteTable {
  if (!isObject(document)) throw new RouteTableError(source, "", "must be a mapping with a routes list");
  for (const key of Object.keys(document)) {
    if (key !== "routes")
      throw new RouteTableError(source, "", `unknown field ${JSON.stringify(key)} (known: routes)`);
  }
  if (!Array.isArray(document.routes)) {
    throw new RouteTableError(source, "routes", "required: a list of routes");
  }
  if (document.routes.length === 0) {
    throw new RouteTableError(source, "routes", "lists no route (every request would be denied)");
  }
  const routes = document.routes.map((entry, i) => parseRoute(entry, i, source));
  return {
    source,
    routes,
    match(method, segments) {
      for (const route of routes) {
        if (route.methods !== null && !route.methods.has(method)) continue;
        if (segmentsMatch(route.segments, segments)) return route;
      }
      return undefined;
    },
  };
}

/** No routes: every request is denied (the table in use while AUTHZ_ROUTES_FILE is not set). */
export const EMPTY_ROUTE_TABLE: RouteTable = { source: "", routes: [], match: () => undefined };

/**
 * The start checks that need more than the file (SIDECARS.md §1): a route other than `public` needs user
 * tokens (AUTHZ_JWT_ISSUER), and every `permission` must name a permission that exists. Throws a
 * RouteTableError naming the first route that cannot work.
 */
export function checkRouteTable(
  table: RouteTable,
  context: { userTokens: boolean; permissionExists(ref: string): boolean },
): void {
  for (const route of table.routes) {
    const where = `routes[${route.index}]`;
    if (route.access.kind !== "public" && !context.userTokens) {
      throw new RouteTableError(
        table.source,
        where,
        "needs a verified user, so AUTHZ_JWT_ISSUER must be set (only public routes work without it)",
      );
    }
    if (route.access.kind === "permission" && !context.permissionExists(route.access.permission)) {
      throw new RouteTableError(
        table.source,
        `${where}.permission`,
        `no permission ${JSON.stringify(route.access.permission)} (see ListPermissions)`,
      );
    }
  }
}

/** Parses the text of a route file (JSON is YAML, so one parser reads both; duplicate keys are errors). */
export function parseRouteTable(text: string, source: string): RouteTable {
  let document: unknown;
  try {
    document = parseYaml(text, { uniqueKeys: true, prettyErrors: true });
  } catch (error) {
    const first = (error as Error).message.split("\n")[0] ?? "";
    throw new RouteTableError(source, "", `not valid JSON or YAML: ${first}`);
  }
  return createRouteTable(document, source);
}

/** Reads and parses the route file at `path`; a problem is a RouteTableError naming the file. */
export function loadRouteTable(path: string): RouteTable {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    throw new RouteTableError(
      path,
      "",
      `cannot read it (${(error as NodeJS.ErrnoException).code ?? "unreadable"})`,
    );
  }
  return parseRouteTable(text, path);
}
