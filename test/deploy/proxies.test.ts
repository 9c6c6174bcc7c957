// deploy/nginx.conf and deploy/Caddyfile, the very files users copy (ports filled in), run by the real
// nginx and Caddy on loopback in front of an upstream that echoes the headers it got, asking the real app
// (deploy/routes.yaml, JWTs against real keys): SIDECARS.md §2 as a client behind each proxy sees it.

import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import { type AddressInfo, connect } from "node:net";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config.ts";
import { type AppDatabase, createSqliteDatabase } from "../helpers/app.ts";
import { type GuardedApp, startGuardedApp, USERS } from "../helpers/guarded-app.ts";
import { tempDir } from "../helpers/keys.ts";
import { freePort } from "../helpers/ports.ts";
import { requireTool } from "../helpers/tools.ts";

/** Where the deploy files expect flip-authz's HTTP listener: its default address. */
const AUTHZ_HTTP = (({ host, port }) => `${host}:${port}`)(loadConfig({}).httpListen);
const nginx = requireTool("nginx");
const caddy = requireTool("caddy");

/** What the upstream saw of each request that reached it. */
interface Seen {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
}

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/**
 * One request written byte for byte on its own connection (so any request target can be sent, even ones
 * Node's client refuses), read until the proxy closes it.
 */
async function raw(
  port: number,
  method: string,
  target: string,
  headers: Record<string, string> = {},
): Promise<Answer> {
  const socket = connect(port, "127.0.0.1");
  await once(socket, "connect");
  const lines = [`${method} ${target} HTTP/1.1`, "Host: api.flip.example", "Connection: close"];
  for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`);
  const chunks: Buffer[] = [];
  socket.on("data", (chunk: Buffer) => chunks.push(chunk));
  // Not end(): a proxy may take a half-closed connection for a client that gave up. `Connection: close`
  // makes it close once it has answered.
  socket.write(`${lines.join("\r\n")}\r\n\r\n`, "latin1");
  await once(socket, "close");
  const text = Buffer.concat(chunks).toString("latin1");
  const [head = "", ...rest] = text.split("\r\n\r\n");
  const [statusLine = "", ...headerLines] = head.split("\r\n");
  const answerHeaders: Record<string, string> = {};
  for (const line of headerLines) {
    const colon = line.indexOf(":");
    answerHeaders[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  let body = rest.join("\r\n\r\n");
  if (answerHeaders["transfer-encoding"] === "chunked") body = unchunk(body);
  return { status: Number(statusLine.split(" ")[1]), headers: answerHeaders, body };
}

function unchunk(text: string): string {
  let body = "";
  let at = 0;
  for (;;) {
    const end = text.indexOf("\r\n", at);
    const size = Number.parseInt(text.slice(at, end), 16);
    if (!(size > 0)) return body;
    body += text.slice(end + 2, end + 2 + size);
    at = end + 2 + size + 2;
  }
}

/** The deploy file with its addresses replaced; each placeholder must be there, so the test follows the file. */
function fill(file: string, replacements: [string, string][]): string {
  let text = readFileSync(resolve("deploy", file), "utf8");
  for (const [from, to] of replacements) {
    if (!text.includes(from)) throw new Error(`deploy/${file} no longer contains ${JSON.stringify(from)}`);
    text = text.split(from).join(to);
  }
  return text;
}

async function waitForPort(port: number, child: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the proxy exited (${child.exitCode}):\n${log()}`);
    const up = await new Promise<boolean>((done) => {
      const socket = connect(port, "127.0.0.1");
      socket.once("connect", () => {
        socket.destroy();
        done(true);
      });
      socket.once("error", () => done(false));
    });
    if (up) return;
    if (Date.now() > deadline) throw new Error(`the proxy did not listen on ${port}:\n${log()}`);
    await new Promise((resolveWait) => setTimeout(resolveWait, 50));
  }
}

interface Proxy {
  port: number;
  stop(): Promise<void>;
}

async function startProcess(
  command: string,
  args: string[],
  port: number,
  env: NodeJS.ProcessEnv = process.env,
): Promise<Proxy> {
  const child = spawn(command, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout?.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on("data", (chunk: Buffer) => (output += chunk.toString()));
  await waitForPort(port, child, () => output);
  return {
    port,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = once(child, "exit");
      child.kill("SIGTERM");
      await exited;
    },
  };
}

/** deploy/nginx.conf with flip-authz at `authzPort`, the API at `upstreamPort`, listening on a free port. */
async function startNginx(authzPort: number, upstreamPort: number): Promise<Proxy> {
  const dir = tempDir("flip-nginx-");
  mkdirSync(join(dir, "logs"));
  const port = await freePort();
  const conf = fill("nginx.conf", [
    [AUTHZ_HTTP, `127.0.0.1:${authzPort}`],
    ["127.0.0.1:3000", `127.0.0.1:${upstreamPort}`],
    ["listen 8000;", `listen 127.0.0.1:${port};`],
  ]);
  writeFileSync(join(dir, "nginx.conf"), conf);
  return startProcess(
    nginx.path as string,
    [
      "-p",
      `${dir}/`,
      "-c",
      join(dir, "nginx.conf"),
      "-e",
      join(dir, "logs/error.log"),
      "-g",
      `daemon off; pid ${join(dir, "nginx.pid")};`,
    ],
    port,
  );
}

/** deploy/Caddyfile likewise; Caddy's own state goes to a temp dir. */
async function startCaddy(authzPort: number, upstreamPort: number): Promise<Proxy> {
  const dir = tempDir("flip-caddy-");
  const port = await freePort();
  const conf = fill("Caddyfile", [
    [AUTHZ_HTTP, `127.0.0.1:${authzPort}`],
    ["127.0.0.1:3000", `127.0.0.1:${upstreamPort}`],
    // Any Host, as in the file; bound to loopback here.
    [":8000 {", `:${port} {\n\tbind 127.0.0.1`],
  ]);
  writeFileSync(join(dir, "Caddyfile"), conf);
  return startProcess(
    caddy.path as string,
    ["run", "--config", join(dir, "Caddyfile"), "--adapter", "caddyfile"],
    port,
    { ...process.env, HOME: dir, XDG_CONFIG_HOME: dir, XDG_DATA_HOME: dir },
  );
}

let db: AppDatabase;
let guarded: GuardedApp;
let upstream: Server;
let upstreamPort: number;
const seen: Seen[] = [];

beforeAll(async () => {
  if (!nginx.available && !caddy.available) return;
  db = await createSqliteDatabase();
  guarded = await startGuardedApp(db);
  upstream = createServer((request, response) => {
    seen.push({ method: request.method ?? "", url: request.url ?? "", headers: request.headers });
    request.resume();
    response.writeHead(200, { "content-type": "text/plain" }).end("from the API");
  });
  upstream.listen(0, "127.0.0.1");
  await once(upstream, "listening");
  upstreamPort = (upstream.address() as AddressInfo).port;
});

afterAll(async () => {
  upstream?.closeAllConnections();
  await new Promise((done) => (upstream ? upstream.close(done) : done(undefined)));
  await guarded?.close();
  await db?.close();
});

const proxies = [
  { name: "nginx", tool: nginx, start: startNginx, deniedBodyIsOurs: false, downStatus: 500 },
  { name: "caddy", tool: caddy, start: startCaddy, deniedBodyIsOurs: true, downStatus: 502 },
] as const;

describe.each(proxies)(
  "$name with deploy/ in front of the API",
  ({ tool, start, deniedBodyIsOurs, downStatus }) => {
    let proxy: Proxy;
    /** What reaches the upstream while `send` runs. */
    async function through(
      method: string,
      target: string,
      headers: Record<string, string> = {},
    ): Promise<{ answer: Answer; reached: Seen[] }> {
      const before = seen.length;
      const answer = await raw(proxy.port, method, target, headers);
      return { answer, reached: seen.slice(before) };
    }

    beforeAll(async () => {
      if (!tool.available) return;
      const authzPort = Number(new URL(guarded.httpBase).port);
      proxy = await start(authzPort, upstreamPort);
    });

    afterAll(async () => {
      await proxy?.stop();
    });

    it.skipIf(!tool.available)(
      "a permitted user reaches the API named in x-flip-user-id, replacing a client-sent one",
      async () => {
        const { answer, reached } = await through("POST", "/api/projects?draft=1", {
          Authorization: guarded.bearer.researcher,
          "X-Flip-User-Id": USERS.admin,
        });
        expect(answer.status, answer.body).toBe(200);
        expect(answer.body).toBe("from the API");
        expect(reached).toHaveLength(1);
        expect(reached[0]).toMatchObject({ method: "POST", url: "/api/projects?draft=1" });
        expect(reached[0]?.headers["x-flip-user-id"]).toBe(USERS.researcher);
        expect(reached[0]?.headers.authorization).toBe(guarded.bearer.researcher);

        const me = await through("GET", "/api/me/settings", { Authorization: guarded.bearer.viewer });
        expect(me.answer.status).toBe(200);
        expect(me.reached[0]?.headers["x-flip-user-id"]).toBe(USERS.viewer);
      },
    );

    it.skipIf(!tool.available)(
      "a public route passes on no user id, even when the client sent one",
      async () => {
        const { answer, reached } = await through("GET", "/api/health", { "X-Flip-User-Id": USERS.admin });
        expect(answer.status).toBe(200);
        expect(reached).toHaveLength(1);
        expect(reached[0]?.headers["x-flip-user-id"] ?? "").toBe("");
      },
    );

    it.skipIf(!tool.available)(
      "a user without the permission gets 403 and the API never sees the request",
      async () => {
        const { answer, reached } = await through("POST", "/api/projects", {
          Authorization: guarded.bearer.viewer,
        });
        expect(answer.status).toBe(403);
        expect(reached).toHaveLength(0);
        if (deniedBodyIsOurs) expect(JSON.parse(answer.body)).toMatchObject({ code: "permission_denied" });
        const none = await through("GET", "/admin", { Authorization: guarded.bearer.admin });
        expect(none.answer.status).toBe(403);
        expect(none.reached).toHaveLength(0);
      },
    );

    it.skipIf(!tool.available)(
      "no token, or an expired one, is 401 with WWW-Authenticate: Bearer",
      async () => {
        const cases: Record<string, string>[] = [
          {},
          { Authorization: guarded.expired },
          { Authorization: "Basic YTpi" },
        ];
        for (const headers of cases) {
          const { answer, reached } = await through("DELETE", "/api/projects/1", headers);
          expect(answer.status).toBe(401);
          expect(answer.headers["www-authenticate"]).toBe("Bearer");
          expect(reached).toHaveLength(0);
          if (deniedBodyIsOurs) expect(JSON.parse(answer.body)).toMatchObject({ code: "unauthenticated" });
        }
      },
    );

    it.skipIf(!tool.available)(
      "path attacks are denied and never reach the API, even for the Admin",
      async () => {
        for (const target of [
          "/api/me/..%2f..%2fadmin",
          "/api/me%2F..%2Fadmin",
          "/api/me/%2e%2e/%2e%2e/admin",
          "/api/me/%252e%252e/admin",
          "/api/me/..;/..;/admin",
          "/api/me/%00",
          "/api/me/%C0%AE%C0%AE/admin",
          "/api/me%5c..%5cadmin",
          "/api/me/%zz",
          "//api/me",
          "/api//me",
          "/api/me/../../admin",
          `/api/me/${"a".repeat(5000)}`,
        ]) {
          const { answer, reached } = await through("DELETE", target, {
            Authorization: guarded.bearer.admin,
          });
          // 403 from flip-authz, or 400 where the proxy refuses the request line itself.
          expect([400, 403], target).toContain(answer.status);
          expect(reached, target).toHaveLength(0);
        }
      },
    );

    it.skipIf(!tool.available)(
      "client-sent X-Forwarded-* or X-Original-* naming an allowed request change nothing",
      async () => {
        const { answer, reached } = await through("GET", "/admin", {
          Authorization: guarded.bearer.viewer,
          "X-Forwarded-Method": "GET",
          "X-Forwarded-Uri": "/api/health",
          "X-Original-URI": "/api/health",
          "X-Original-Method": "GET",
          "X-Original-URL": "http://api.flip.example/api/health",
          "X-Forwarded-Prefix": "/api/health",
        });
        expect(answer.status).toBe(403);
        expect(reached).toHaveLength(0);
        const post = await through("POST", "/api/projects", {
          Authorization: guarded.bearer.viewer,
          "X-Forwarded-Method": "GET",
          "X-Forwarded-Uri": "/api/me",
        });
        expect(post.answer.status).toBe(403);
        expect(post.reached).toHaveLength(0);
      },
    );

    it.skipIf(!tool.available)(
      "flip-authz down: denied (fail closed), the API never sees the request",
      async () => {
        const dead = await start(await freePort(), upstreamPort);
        try {
          for (const target of ["/api/health", "/api/projects"]) {
            const before = seen.length;
            const answer = await raw(dead.port, "POST", target, { Authorization: guarded.bearer.admin });
            expect(answer.status).toBe(downStatus);
            expect(seen.length - before).toBe(0);
          }
        } finally {
          await dead.stop();
        }
      },
    );
  },
);
