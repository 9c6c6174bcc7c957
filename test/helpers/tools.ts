// System tools the suites drive as real peers (nginx, caddy, pgbouncer, chromium, h2load, Python's grpcio).
// A missing tool skips its suite and says so, unless AUTHZ_TEST_REQUIRE_TOOLS=true (.ci/run, which installs
// them first): then a missing tool fails the run, so CI on a fresh machine cannot pass by skipping.

import { execFileSync } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { delimiter, join } from "node:path";

const REQUIRED = process.env.AUTHZ_TEST_REQUIRE_TOOLS === "true";

/** Debian package that provides each tool, for the messages. */
const PACKAGES: Record<string, string> = {
  nginx: "nginx",
  caddy: "caddy",
  pgbouncer: "pgbouncer",
  chromium: "chromium",
  h2load: "nghttp2-client",
  "python3-grpcio": "python3-grpcio",
  script: "bsdutils",
};

/** Where Debian installs daemons that are not on an ordinary user's PATH. */
const EXTRA_DIRS = ["/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin"];

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The absolute path of `name` on PATH (or in the sbin directories), or null. */
export function which(name: string): string | null {
  const dirs = [...(process.env.PATH ?? "").split(delimiter).filter(Boolean), ...EXTRA_DIRS];
  for (const dir of dirs) {
    const candidate = join(dir, name);
    if (executable(candidate)) return candidate;
  }
  return null;
}

export interface Tool {
  /** The tool's name as the suites call it (`nginx`, `python3-grpcio`, …). */
  name: string;
  /** What to run: the binary, or for python3-grpcio a python3 that can import grpc. Null when missing. */
  path: string | null;
  available: boolean;
}

const found = new Map<string, Tool>();

/**
 * Finds a tool once per process. When it is missing: throws under AUTHZ_TEST_REQUIRE_TOOLS=true, else
 * warns that its suites are SKIPPED; use with `describe.skipIf(!tool.available)`.
 */
export function requireTool(name: string): Tool {
  const known = found.get(name);
  if (known) return known;
  const path = name === "python3-grpcio" ? pythonWithGrpc() : which(name);
  const tool: Tool = { name, path, available: path !== null };
  found.set(name, tool);
  if (!tool.available) {
    const hint = `apt-get install ${PACKAGES[name] ?? name}`;
    if (REQUIRED) throw new Error(`${name} is required (AUTHZ_TEST_REQUIRE_TOOLS=true) but missing: ${hint}`);
    console.warn(`${name} suites SKIPPED: ${name} is not installed (${hint})`);
  }
  return tool;
}

/** A python3 that imports grpc: Debian's /usr/bin/python3 has python3-grpcio, a pyenv one on PATH may not. */
function pythonWithGrpc(): string | null {
  const candidates = [...new Set(["/usr/bin/python3", which("python3")].filter((p): p is string => !!p))];
  for (const candidate of candidates) {
    try {
      execFileSync(candidate, ["-c", "import grpc"], { stdio: "ignore", timeout: 10_000 });
      return candidate;
    } catch {
      // Not this one.
    }
  }
  return null;
}
