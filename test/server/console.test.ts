// The console's files on the real HTTP listener, through real sockets: what a browser is sent (content
// types, the CSP and nosniff on every answer, caching), the /console redirect, paths that try to leave
// console/dist, and AUTHZ_CONSOLE=false turning it all into 404.

import { mkdtempSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CONSOLE_CSP, loadConsole } from "../../src/server/console.ts";
import { type AppDatabase, createSqliteDatabase } from "../helpers/app.ts";
import { type RawResponse, type SecureApp, startSecureApp } from "../helpers/secure-app.ts";

/** One request with `path` sent exactly as written (no URL normalisation of `..` or `%2e`). */
function send(
  app: SecureApp,
  path: string,
  options: { method?: string; headers?: Record<string, string> } = {},
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port: app.app.httpPort,
        path,
        method: options.method ?? "GET",
        headers: options.headers,
        agent: false,
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("end", () =>
          resolve({
            status: response.statusCode ?? 0,
            headers: response.headers,
            body: Buffer.concat(chunks),
          }),
        );
      },
    );
    req.on("error", reject);
    req.end();
  });
}

function expectSecurityHeaders(response: RawResponse) {
  const csp = response.headers["content-security-policy"];
  expect(csp).toBe(CONSOLE_CSP);
  expect(csp).toMatch(/(^|; )default-src 'self'(;|$)/);
  expect(csp).not.toMatch(/unsafe-inline|unsafe-eval/);
  expect(response.headers["x-content-type-options"]).toBe("nosniff");
}

/** The files index.html refers to, as paths under /console/. */
function referencedAssets(html: string): string[] {
  return [...html.matchAll(/(?:src|href)="\.\/([^"]+)"/g)].map((match) => `/console/${match[1]}`);
}

describe("the console on the HTTP listener", () => {
  let db: AppDatabase;
  let app: SecureApp;
  beforeAll(async () => {
    db = await createSqliteDatabase();
    app = await startSecureApp(db.url, { AUTHZ_LOG_LEVEL: "silent" });
  });
  afterAll(async () => {
    await app?.close();
    await db?.close();
  });

  it("redirects /console to /console/, keeping the query", async () => {
    for (const [path, location] of [
      ["/console", "console/"],
      ["/console?x=1", "console/?x=1"],
    ] as const) {
      const response = await send(app, path);
      expect(response.status).toBe(301);
      expect(response.headers.location).toBe(location);
      // Resolved as a browser does, the relative location lands on the page.
      expect(new URL(location, `http://127.0.0.1${path}`).pathname).toBe("/console/");
      expectSecurityHeaders(response);
    }
  });

  it("serves the page, its script, stylesheet and favicon with their types, the CSP and nosniff", async () => {
    const page = await send(app, "/console/");
    expect(page.status).toBe(200);
    expect(page.headers["content-type"]).toBe("text/html; charset=utf-8");
    expect(page.headers["cache-control"]).toBe("no-cache");
    expectSecurityHeaders(page);
    const html = page.body.toString("utf8");
    expect(html).toContain("<title>flip-authz console</title>");
    // No inline script or style for the CSP to refuse: every script and stylesheet is a file.
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
    expect(html).not.toMatch(/<style|\sstyle=|\son[a-z]+=/i);

    const assets = referencedAssets(html);
    const types = new Map<string, string>();
    for (const path of assets) {
      const response = await send(app, path);
      expect(response.status, path).toBe(200);
      expectSecurityHeaders(response);
      expect(Number(response.headers["content-length"])).toBe(response.body.length);
      types.set(path.replace(/.*\./, "."), String(response.headers["content-type"]));
      expect(response.headers["cache-control"], path).toBe(
        path.startsWith("/console/assets/") ? "public, max-age=31536000, immutable" : "no-cache",
      );
    }
    expect(Object.fromEntries(types)).toEqual({
      ".js": "text/javascript; charset=utf-8",
      ".css": "text/css; charset=utf-8",
      ".svg": "image/svg+xml",
    });
    // Nothing from another origin: every reference is one of these files.
    expect(html).not.toMatch(/(?:src|href)="(?:https?:)?\/\//);
  });

  it("answers a revalidation with 304 and HEAD without a body", async () => {
    const first = await send(app, "/console/index.html");
    const etag = String(first.headers.etag);
    expect(etag).toMatch(/^"[\w-]+"$/);
    const again = await send(app, "/console/", { headers: { "if-none-match": etag } });
    expect(again.status).toBe(304);
    expect(again.body.length).toBe(0);
    expect(again.headers.etag).toBe(etag);
    expectSecurityHeaders(again);
    const changed = await send(app, "/console/", { headers: { "if-none-match": '"something-else"' } });
    expect(changed.status).toBe(200);

    const head = await send(app, "/console/favicon.svg", { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.body.length).toBe(0);
    expect(Number(head.headers["content-length"])).toBeGreaterThan(0);
  });

  it.each([
    "/console/../package.json",
    "/console/%2e%2e/package.json",
    "/console/..%2fpackage.json",
    "/console/assets/../../package.json",
    "/console/%2e%2e%2f%2e%2e%2fsrc%2fconfig.ts",
    "/console//etc/passwd",
    "/console/%2fetc%2fpasswd",
    "/console/vite.config.ts",
    "/console/src/main.ts",
    "/console/%E0%A4%A",
    "/console/nothing-here.js",
  ])("answers 404 to %s, with the CSP and nosniff", async (path) => {
    const response = await send(app, path);
    expect(response.status).toBe(404);
    expect(response.body.toString("utf8")).toBe("not found\n");
    expectSecurityHeaders(response);
  });

  it("refuses methods other than GET and HEAD", async () => {
    const response = await send(app, "/console/", { method: "POST" });
    expect(response.status).toBe(405);
    expect(response.headers.allow).toBe("GET, HEAD");
    expectSecurityHeaders(response);
  });

  it("is behind the Host check like everything but the probes (open mode: DNS rebinding)", async () => {
    const response = await send(app, "/console/", { headers: { host: "evil.example:80" } });
    expect(response.status).toBe(421);
  });
});

describe("AUTHZ_CONSOLE=false", () => {
  let db: AppDatabase;
  let app: SecureApp;
  beforeAll(async () => {
    db = await createSqliteDatabase();
    app = await startSecureApp(db.url, { AUTHZ_LOG_LEVEL: "silent", AUTHZ_CONSOLE: "false" });
  });
  afterAll(async () => {
    await app?.close();
    await db?.close();
  });

  it.each(["/console", "/console/", "/console/index.html", "/console/favicon.svg"])(
    "answers 404 to %s",
    async (path) => {
      const response = await send(app, path);
      expect(response.status).toBe(404);
      expect(response.body.toString("utf8")).not.toContain("flip-authz console");
    },
  );

  it("still answers the probes", async () => {
    expect((await send(app, "/healthz")).status).toBe(200);
  });
});

describe("loadConsole", () => {
  it("refuses a folder without index.html, saying what to do", () => {
    const dir = mkdtempSync(join(tmpdir(), "console-"));
    writeFileSync(join(dir, "favicon.svg"), "<svg/>");
    expect(() => loadConsole(dir)).toThrow(
      /no index\.html .*npm run build:console, or set AUTHZ_CONSOLE=false/,
    );
  });
});
