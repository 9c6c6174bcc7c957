// The web console's files (console/dist, built from console/) on the HTTP listener at /console/. Every
// file is read into memory at start, so a request can only name a file that is there (no path reaches
// the file system: no traversal); every answer carries the CSP and nosniff.

import { createHash } from "node:crypto";
import { readdirSync, readFileSync, statSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { extname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";

/** Where the built console is, in the repository and in the image. */
const CONSOLE_DIR = fileURLToPath(new URL("../../console/dist/", import.meta.url));

const CONSOLE_PATH = "/console";

/**
 * Only this origin's own files and calls: no inline script or style, no eval, no plugins, no framing, no
 * <base> that could move relative URLs elsewhere, no form posting anywhere (the page submits by script).
 */
export const CONSOLE_CSP =
  "default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const SECURITY_HEADERS = {
  "content-security-policy": CONSOLE_CSP,
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-resource-policy": "same-origin",
};

const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".json": "application/json",
  ".txt": "text/plain; charset=utf-8",
};

/** Files under assets/ carry a hash of their content in their name: they never change, so cache them. */
const IMMUTABLE = "public, max-age=31536000, immutable";
/** index.html and the favicon keep their names: ask each time (a 304 when the ETag still matches). */
const REVALIDATE = "no-cache";

interface ConsoleFile {
  body: Buffer;
  contentType: string;
  etag: string;
  cacheControl: string;
}

export interface ConsoleSite {
  /** Answers a request whose path is /console or under it; false for any other path (not handled). */
  handle(request: IncomingMessage, response: ServerResponse, path: string): boolean;
}

/** Reads every file under `dir` (the build output); throws when there is no index.html. */
export function loadConsole(dir: string = CONSOLE_DIR): ConsoleSite {
  const files = new Map<string, ConsoleFile>();
  for (const path of walk(dir)) {
    const name = relative(dir, path).split(sep).join("/");
    const body = readFileSync(path);
    files.set(name, {
      body,
      contentType: CONTENT_TYPES[extname(name).toLowerCase()] ?? "application/octet-stream",
      etag: `"${createHash("sha256").update(body).digest("base64url").slice(0, 27)}"`,
      cacheControl: name.startsWith("assets/") ? IMMUTABLE : REVALIDATE,
    });
  }
  if (!files.has("index.html")) {
    throw new Error(
      `the console's files are missing (no index.html in ${dir}): run npm run build:console, or set AUTHZ_CONSOLE=false`,
    );
  }
  return {
    handle(request, response, path) {
      if (path === CONSOLE_PATH) {
        // Relative, so it also lands right behind a proxy that mounts the service under a prefix.
        const query = (request.url ?? "").slice(path.length);
        answer(response, 301, { location: `console/${query}` }, "");
        return true;
      }
      if (!path.startsWith(`${CONSOLE_PATH}/`)) return false;
      if (request.method !== "GET" && request.method !== "HEAD") {
        answer(response, 405, { allow: "GET, HEAD" }, "method not allowed\n");
        return true;
      }
      const file = files.get(fileName(path.slice(CONSOLE_PATH.length + 1)));
      if (!file) {
        answer(response, 404, {}, "not found\n");
        return true;
      }
      const headers = { etag: file.etag, "cache-control": file.cacheControl };
      if (matches(request.headers["if-none-match"], file.etag)) {
        answer(response, 304, headers, "");
        return true;
      }
      response.writeHead(200, {
        ...SECURITY_HEADERS,
        ...headers,
        "content-type": file.contentType,
        "content-length": file.body.length,
      });
      // node:http sends no body for HEAD.
      response.end(file.body);
      return true;
    },
  };
}

/** Whether an If-None-Match header (one tag, a list, or *) names `etag`. */
function matches(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false;
  return header.split(",").some((tag) => {
    const trimmed = tag.trim();
    return trimmed === "*" || trimmed === etag || trimmed === `W/${etag}`;
  });
}

/** The file a path under /console/ names ("" is index.html); an undecodable path names none. */
function fileName(rest: string): string {
  try {
    const name = decodeURIComponent(rest);
    return name === "" ? "index.html" : name;
  } catch {
    return "";
  }
}

function answer(response: ServerResponse, status: number, headers: Record<string, string>, body: string) {
  response.writeHead(status, {
    ...SECURITY_HEADERS,
    "cache-control": "no-store",
    ...(body !== "" && { "content-type": "text/plain; charset=utf-8" }),
    ...headers,
  });
  response.end(body);
}

function* walk(dir: string): Generator<string> {
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return;
  }
  for (const entry of entries.sort()) {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) yield* walk(path);
    else yield path;
  }
}
