// @flip-authz/client as a backend service gets it: `npm pack`, installed from the tarball into a scratch
// project, imported by plain Node (JavaScript, no type stripping under node_modules) and by the TypeScript
// compiler (its declarations), calling a real server: reads, writes with a user's token, read-your-writes,
// deadlines, retries across a server restart, mutual TLS. And it brings none of the server's dependencies.

import { execFile, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NIL_UUID } from "../../src/authz/ids.ts";
import { type AppDatabase, createSqliteDatabase, eventually } from "../helpers/app.ts";
import { createTestPki } from "../helpers/certs.ts";
import { CLIENT_ID, ISSUER, signAccessToken } from "../helpers/keys.ts";
import { freePort } from "../helpers/ports.ts";
import { createTestPool, type SecureApp, startSecureApp, type TestPool } from "../helpers/secure-app.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const CLIENT_DIR = join(ROOT, "clients/typescript");
const TOKEN = "backend-service-token-000001";
const run = promisify(execFile);

/** The script a backend would write, run by plain Node from the scratch project. */
const SCRIPT = `
import { readFileSync } from "node:fs";
import { AuthzCallError, Code, createAuthzClient } from "@flip-authz/client";

const [phase] = process.argv.slice(2);
const env = process.env;
const out = (value) => process.stdout.write(JSON.stringify(value) + "\\n");
const failure = (error) =>
  error instanceof AuthzCallError
    ? { code: error.code, codeName: error.codeName, details: error.details, attempts: error.attempts }
    : { unexpected: String(error) };

if (phase === "basics") {
  const client = createAuthzClient({ address: env.ADDRESS, token: env.TOKEN, timeoutMs: 3000 });
  const user = env.USER_ID;
  const denied = await client.checkPermission({ userId: user, permission: "CAN_CREATE_PROJECTS" });
  const session = client.session();
  const written = await session.assignRole({ userId: user, role: "Researcher" }, { token: env.ADMIN_JWT });
  const fresh = await session.checkPermission({ userId: user, permission: "CAN_CREATE_PROJECTS" });
  const batch = await session.checkPermissions({ checks: [{ userId: user, permission: "can_create_projects" }] });
  const profile = await session.updateProfile({ userId: user, name: "Ada" }, { token: env.ADMIN_JWT });
  const read = await session.getProfile({ userId: user });
  const roles = await client.listRoles({});
  let refused, deadline, ahead;
  try {
    // A session started past the newest revision: its reads carry it, so the server refuses them.
    await client.session(String(BigInt(written.writtenAt) + 1000000n)).listRoles({});
  } catch (error) {
    ahead = failure(error);
  }
  try {
    await client.assignRole({ userId: user, role: "Admin" });
  } catch (error) {
    refused = failure(error);
  }
  try {
    for await (const change of client.watchChanges({ after: "" }, { timeoutMs: 300 })) void change;
  } catch (error) {
    deadline = failure(error);
  }
  client.close();
  out({
    denied: denied.allowed, written: written.writtenAt, sessionRevision: session.revision, fresh,
    batch: batch.results.map((r) => r.allowed), profileWrittenAt: profile.writtenAt, read: { name: read.profile.name, readAt: read.readAt },
    roles: roles.roles.map((r) => r.name), refused, deadline, ahead, unavailable: Code.UNAVAILABLE,
  });
}

if (phase === "retry") {
  let retries = 0;
  const client = createAuthzClient({
    address: env.ADDRESS,
    token: env.TOKEN,
    retry: { maxAttempts: 100 },
    onRetry: (info) => {
      retries++;
      if (retries === 1) out({ retrying: info.error.codeName });
    },
  });
  const started = Date.now();
  try {
    const answer = await client.checkPermission({ userId: env.USER_ID, permission: "CAN_MANAGE_USERS" }, { timeoutMs: 30000 });
    out({ allowed: answer.allowed, retries, ms: Date.now() - started });
  } catch (error) {
    out({ error: failure(error), retries });
  }
  client.close();
}

if (phase === "deadline") {
  const client = createAuthzClient({ address: env.ADDRESS, timeoutMs: 1500, retry: { maxAttempts: 100 } });
  const started = Date.now();
  try {
    await client.listPermissions({});
    out({ unexpected: "answered" });
  } catch (error) {
    out({ error: failure(error), ms: Date.now() - started });
  }
  client.close();
}

if (phase === "tls") {
  const client = createAuthzClient({
    address: env.ADDRESS,
    token: env.TOKEN,
    tls: { ca: readFileSync(env.CA), cert: readFileSync(env.CERT), key: readFileSync(env.KEY) },
  });
  const answer = await client.listPermissions({});
  client.close();
  out({ permissions: answer.permissions.length });
}
`;

/** What a TypeScript backend compiles against the declarations (strict, library types checked too). */
const TYPED = `
import { createAuthzClient, type AuthzSession, type CheckPermissionResponse } from "@flip-authz/client";
const client = createAuthzClient({ address: "127.0.0.1:50051", token: () => "t" });
const answer: Promise<CheckPermissionResponse> = client.checkPermission({ userId: "u", permission: "p" });
const session: AuthzSession = client.session();
async function use(): Promise<string> {
  const written = await session.setUserRoles({ userId: "u", roles: ["Viewer"] }, { timeoutMs: 100 });
  for await (const change of client.watchChanges({ after: written.writtenAt })) return change.revision;
  return (await answer).checkedAt;
}
void use;
// @ts-expect-error: a request is typed from the contract
void client.checkPermission({ userId: 1 });
`;

describe("@flip-authz/client, packed and installed like a dependency", { timeout: 120_000 }, () => {
  let dir: string;
  let scratch: string;
  let tarball: string;
  let db: AppDatabase;
  let pool: TestPool;
  let server: SecureApp;
  let port: number;
  let serverEnv: Record<string, string>;
  const ADMIN = randomUser();
  let adminJwt: string;

  function randomUser(): string {
    return crypto.randomUUID();
  }

  const node = async (phase: string, env: Record<string, string>) => {
    const { stdout } = await run(process.execPath, ["run.mjs", phase], {
      cwd: scratch,
      env: { PATH: process.env.PATH ?? "", ...env },
      timeout: 60_000,
    });
    return JSON.parse(stdout.trim().split("\n").pop() ?? "null") as Record<string, unknown>;
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "flip-authz-client-"));
    const packed = JSON.parse(
      execFileSync("npm", ["pack", "--json", "--pack-destination", dir], {
        cwd: CLIENT_DIR,
        encoding: "utf8",
      }),
    ) as { filename: string; files: { path: string }[] }[];
    const first = packed[0];
    if (!first) throw new Error("npm pack made nothing");
    tarball = join(dir, first.filename);
    scratch = join(dir, "backend");
    execFileSync("mkdir", ["-p", scratch]);
    writeFileSync(
      join(scratch, "package.json"),
      JSON.stringify({
        name: "backend",
        private: true,
        type: "module",
        dependencies: { "@flip-authz/client": `file:${tarball}` },
      }),
    );
    writeFileSync(join(scratch, "run.mjs"), SCRIPT);
    // Offline-friendly: what the client needs is in npm's cache after this repository's own install.
    execFileSync("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund", "--ignore-scripts"], {
      cwd: scratch,
      stdio: "ignore",
    });

    db = await createSqliteDatabase();
    pool = await createTestPool();
    port = await freePort();
    serverEnv = {
      AUTHZ_GRPC_LISTEN: `127.0.0.1:${port}`,
      AUTHZ_SERVICE_TOKENS: TOKEN,
      AUTHZ_JWT_ISSUER: ISSUER,
      AUTHZ_JWT_AUDIENCE: CLIENT_ID,
      AUTHZ_JWKS_FILE: pool.jwksFile,
      AUTHZ_LOG_LEVEL: "silent",
    };
    server = await startSecureApp(db.url, serverEnv);
    await server.app.authz.assignRole(ADMIN, "Admin", NIL_UUID);
    adminJwt = await signAccessToken(pool.rsa, ADMIN);
  }, 180_000);
  afterAll(async () => {
    await server?.close();
    await db?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("ships JavaScript and declarations, no TypeScript sources, and installs without the server's dependencies", () => {
    const listed = execFileSync("tar", ["-tzf", tarball], { encoding: "utf8" }).trim().split("\n");
    expect(listed).toContain("package/dist/index.js");
    expect(listed).toContain("package/dist/index.d.ts");
    expect(listed).toContain("package/dist/gen/flip/authz/v1/authz_pb.js");
    expect(listed.filter((path) => path.endsWith(".ts") && !path.endsWith(".d.ts"))).toEqual([]);
    const modules = join(scratch, "node_modules");
    expect(existsSync(join(modules, "@grpc/grpc-js"))).toBe(true);
    expect(existsSync(join(modules, "@bufbuild/protobuf"))).toBe(true);
    for (const serverOnly of [
      "pg",
      "@mikro-orm/core",
      "better-sqlite3",
      "pino",
      "jose",
      "@connectrpc/connect",
      "prom-client",
    ]) {
      expect({ serverOnly, installed: existsSync(join(modules, serverOnly)) }).toEqual({
        serverOnly,
        installed: false,
      });
    }
    const manifest = JSON.parse(readFileSync(join(modules, "@flip-authz/client/package.json"), "utf8")) as {
      dependencies: Record<string, string>;
    };
    expect(Object.keys(manifest.dependencies).sort()).toEqual(["@bufbuild/protobuf", "@grpc/grpc-js"]);
  });

  it("type-checks a backend's TypeScript against its declarations", () => {
    writeFileSync(join(scratch, "typed.ts"), TYPED);
    writeFileSync(
      join(scratch, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          target: "es2022",
          module: "nodenext",
          moduleResolution: "nodenext",
          strict: true,
          noEmit: true,
          skipLibCheck: false,
          types: ["node"],
          typeRoots: [join(ROOT, "node_modules/@types")],
        },
        files: ["typed.ts"],
      }),
    );
    const tsc = join(ROOT, "node_modules/.bin/tsc");
    const result = spawnSyncText(tsc, ["-p", "tsconfig.json"], scratch);
    expect(result).toEqual({ status: 0, output: "" });
  });

  it("calls a real server from plain Node: reads, a user's write, read-your-writes, refusals and deadlines as AuthzCallError", async () => {
    const user = randomUser();
    const result = await node("basics", {
      ADDRESS: `http://127.0.0.1:${port}`,
      TOKEN,
      ADMIN_JWT: adminJwt,
      USER_ID: user,
    });
    expect(result).toMatchObject({
      denied: false,
      fresh: { allowed: true, grantedBy: ["Researcher"] },
      batch: [true],
      read: { name: "Ada" },
      roles: ["Admin", "Researcher", "Viewer"],
      refused: {
        code: 7,
        codeName: "PERMISSION_DENIED",
        details: "service tokens may not call AssignRole (it writes); use a user token",
        attempts: 1,
      },
      deadline: { code: 4, codeName: "DEADLINE_EXCEEDED" },
      ahead: { code: 3, codeName: "INVALID_ARGUMENT" },
      unavailable: 14,
    });
    expect((result.ahead as { details: string }).details).toMatch(
      /^at_least_as_fresh: revision \d+ has not been written/,
    );
    // The session passed its written_at: its reads reflect at least that revision.
    expect(result.sessionRevision).toBe(result.profileWrittenAt);
    expect(BigInt(String((result.fresh as { checkedAt: string }).checkedAt))).toBeGreaterThanOrEqual(
      BigInt(String(result.written)),
    );
    expect(BigInt(String((result.read as { readAt: string }).readAt))).toBeGreaterThanOrEqual(
      BigInt(String(result.profileWrittenAt)),
    );
    const audit = await db.sql(
      "SELECT action, modified_by_user_id FROM users_audit WHERE user_id = ? ORDER BY id",
      [user],
    );
    expect(audit).toEqual([
      { action: "Assigned role Researcher", modified_by_user_id: ADMIN },
      { action: "Updated user profile", modified_by_user_id: ADMIN },
    ]);
  });

  it("retries UNAVAILABLE across a server restart, within the call's deadline", async () => {
    await server.close();
    const child = spawn(process.execPath, ["run.mjs", "retry"], {
      cwd: scratch,
      env: { PATH: process.env.PATH ?? "", ADDRESS: `127.0.0.1:${port}`, TOKEN, USER_ID: ADMIN },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const lines: string[] = [];
    child.stdout.on("data", (chunk: Buffer) => lines.push(...chunk.toString().trim().split("\n")));
    const exited = new Promise((resolve) => child.on("close", resolve));
    await eventually(async () => lines.some((line) => line.includes("retrying")), 20_000);
    expect(JSON.parse(lines[0] ?? "{}")).toEqual({ retrying: "UNAVAILABLE" });
    server = await startSecureApp(db.url, serverEnv);
    await exited;
    const result = JSON.parse(lines[lines.length - 1] ?? "{}") as { allowed: boolean; retries: number };
    expect(result.allowed).toBe(true);
    expect(result.retries).toBeGreaterThan(1);
  });

  it("gives up at the deadline when the server stays away", async () => {
    const result = await node("deadline", { ADDRESS: `127.0.0.1:${await freePort()}` });
    expect(result.error).toMatchObject({ code: 14, codeName: "UNAVAILABLE" });
    expect((result.error as { attempts: number }).attempts).toBeGreaterThan(2);
    expect(result.ms).toBeLessThan(1500 + 1000);
  });

  it("speaks mutual TLS with a client certificate", async () => {
    const pki = createTestPki();
    const tlsDb = await createSqliteDatabase();
    const tlsServer = await startSecureApp(tlsDb.url, {
      AUTHZ_SERVICE_TOKENS: TOKEN,
      AUTHZ_TLS_CERT_FILE: pki.server.cert,
      AUTHZ_TLS_KEY_FILE: pki.server.key,
      AUTHZ_TLS_CLIENT_CA_FILE: pki.ca.cert,
      AUTHZ_LOG_LEVEL: "silent",
    });
    try {
      const result = await node("tls", {
        ADDRESS: `https://localhost:${tlsServer.app.grpcPort}`,
        TOKEN,
        CA: pki.ca.cert,
        CERT: pki.client.cert,
        KEY: pki.client.key,
      });
      expect(result).toEqual({ permissions: 9 });
    } finally {
      await tlsServer.close();
      await tlsDb.close();
    }
  });
});

function spawnSyncText(
  command: string,
  args: string[],
  cwd: string,
): { status: number | null; output: string } {
  try {
    execFileSync(command, args, { cwd, encoding: "utf8", stdio: "pipe" });
    return { status: 0, output: "" };
  } catch (error) {
    const failed = error as { status: number | null; stdout?: string; stderr?: string };
    return { status: failed.status, output: `${failed.stdout ?? ""}${failed.stderr ?? ""}` };
  }
}
