// A follower facing a bad upstream (the "Bad input and faults"): unreachable, the wrong kind of
// server, a rejected token, answers that are not flip-authz answers, a change stream cut again and again
// mid-burst. Each time: a clear log line, NOT_SERVING (or no stale answer), no crash, and recovery on its own.

import { randomUUID } from "node:crypto";
import { createServer as createHttpServer } from "node:http";
import { connect, createServer as createTcpServer, type Socket } from "node:net";
import type { ServiceImpl } from "@connectrpc/connect";
import { afterEach, describe, expect, it } from "vitest";
import { AuthzService, ChangeKind } from "../../gen/flip/authz/v1/authz_pb.ts";
import { NIL_UUID } from "../../src/authz/ids.ts";
import { addGrpcService, bindGrpcServer, createGrpcServer } from "../../src/server/grpc.ts";
import { addHealthService, createHealthState } from "../../src/server/health.ts";
import {
  type AppDatabase,
  createSqliteDatabase,
  eventually,
  startTestApp,
  type TestApp,
} from "../helpers/app.ts";
import { readiness, startTestFollower, type TestFollower } from "../helpers/follower.ts";
import { freePort } from "../helpers/ports.ts";
import { S, type SecureApp, startSecureApp } from "../helpers/secure-app.ts";

const m = AuthzService.method;
const silent = { error() {}, warn() {}, info() {} };

/** Everything started by a test, closed after it whatever happened. */
const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function sqlite(): Promise<AppDatabase> {
  const db = await createSqliteDatabase();
  cleanups.push(() => db.close());
  return db;
}

async function follower(target: string, env: Record<string, string> = {}): Promise<TestFollower> {
  const f = await startTestFollower(target, { AUTHZ_UPSTREAM_MAX_STALENESS_MS: "1000", ...env });
  cleanups.push(() => f.close());
  return f;
}

/** Waits for a log line containing `text`; returns it. */
async function logged(f: TestFollower, text: string, timeoutMs = 10_000): Promise<string> {
  let found = "";
  await eventually(async () => {
    found = f.messages().find((message) => message.includes(text)) ?? "";
    return found !== "";
  }, timeoutMs);
  return found;
}

const checkOf = (f: TestFollower, userId: string) =>
  f.client.fail(m.checkPermission, { userId, permission: "CAN_MANAGE_USERS" });

describe("a follower and a bad upstream", () => {
  it("unreachable at start: NOT_SERVING, a clear log line, UNAVAILABLE reads; serves once the upstream is up", async () => {
    const port = await freePort();
    const f = await follower(`127.0.0.1:${port}`);
    const line = await logged(f, `the upstream at 127.0.0.1:${port} cannot be reached`);
    expect(line).toMatch(/\(UNAVAILABLE/);
    expect(await readiness(f.httpBase)).toBe("NOT_SERVING");
    expect(await checkOf(f, randomUUID())).toEqual({
      code: S.UNAVAILABLE,
      details: "the upstream flip-authz cannot answer (UNAVAILABLE); retry",
    });

    const db = await sqlite();
    const upstream = await startTestApp(db.url, { AUTHZ_GRPC_LISTEN: `127.0.0.1:${port}` });
    cleanups.push(() => upstream.close());
    await eventually(async () => (await readiness(f.httpBase)) === "SERVING", 15_000);
    const user = randomUUID();
    await upstream.app.authz.assignRole(user, "Admin", NIL_UUID);
    await eventually(
      async () =>
        (await f.client.call(m.checkPermission, { userId: user, permission: "CAN_MANAGE_USERS" })).allowed,
      5000,
    );
    expect(f.messages()).toContain("synced with the upstream");
  });

  it("a rejected token: NOT_SERVING and a line naming AUTHZ_UPSTREAM_TOKEN; serves once the upstream accepts it", async () => {
    const db = await sqlite();
    const port = await freePort();
    const env = { AUTHZ_GRPC_LISTEN: `127.0.0.1:${port}`, AUTHZ_LOG_LEVEL: "silent" };
    let upstream: SecureApp = await startSecureApp(db.url, {
      ...env,
      AUTHZ_SERVICE_TOKENS: "some-other-token-000000",
    });
    cleanups.push(() => upstream.close());
    const f = await follower(`127.0.0.1:${port}`, { AUTHZ_UPSTREAM_TOKEN: "the-followers-token-0000" });
    const line = await logged(f, "refuses this follower");
    expect(line).toBe(
      `the upstream at 127.0.0.1:${port} refuses this follower (UNAUTHENTICATED: invalid credentials): is AUTHZ_UPSTREAM_TOKEN one of its service tokens?`,
    );
    expect(line).not.toContain("the-followers-token");
    expect(await readiness(f.httpBase)).toBe("NOT_SERVING");
    // The caller did nothing wrong: the follower is unavailable, not the caller unauthenticated.
    expect((await checkOf(f, randomUUID())).code).toBe(S.UNAVAILABLE);

    await upstream.close();
    upstream = await startSecureApp(db.url, {
      ...env,
      AUTHZ_SERVICE_TOKENS: "some-other-token-000000,the-followers-token-0000",
    });
    await eventually(async () => (await readiness(f.httpBase)) === "SERVING", 15_000);
    expect((await f.client.call(m.listRoles, {})).roles).toHaveLength(3);
  });

  it("a gRPC server that is not flip-authz: a line saying so, NOT_SERVING", async () => {
    const server = createGrpcServer();
    addHealthService(server, createHealthState(), { logger: silent });
    const port = await bindGrpcServer(server, "127.0.0.1", 0);
    cleanups.push(() => server.forceShutdown());
    const f = await follower(`127.0.0.1:${port}`);
    expect(await logged(f, "does not serve flip.authz.v1.AuthzService")).toMatch(
      /\(UNIMPLEMENTED: .*\): is AUTHZ_UPSTREAM a flip-authz gRPC listener\?$/,
    );
    expect(await readiness(f.httpBase)).toBe("NOT_SERVING");
  });

  it("an HTTP/1.1 server (not gRPC at all): a line saying so, NOT_SERVING, still answering health", async () => {
    const server = createHttpServer((_req, res) => res.end("hello"));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    cleanups.push(() => new Promise((resolve) => server.close(resolve)));
    cleanups.push(() => server.closeAllConnections());
    const port = (server.address() as { port: number }).port;
    const f = await follower(`127.0.0.1:${port}`);
    const line = await logged(f, `the upstream at 127.0.0.1:${port}`);
    expect(line).toMatch(/cannot be reached \(UNAVAILABLE: .*Protocol error/);
    expect(await readiness(f.httpBase)).toBe("NOT_SERVING");
  });

  it("answers that are not flip-authz answers: a line naming what was malformed, NOT_SERVING, no crash", async () => {
    const server = createGrpcServer();
    const garbage: Partial<ServiceImpl<typeof AuthzService>> = {
      listPermissions: () => ({ permissions: [], readAt: "yesterday" }),
      listRoles: () => ({ roles: [], readAt: "yesterday" }),
    };
    addGrpcService(server, AuthzService, garbage, { logger: silent });
    const port = await bindGrpcServer(server, "127.0.0.1", 0);
    cleanups.push(() => server.forceShutdown());
    const f = await follower(`127.0.0.1:${port}`);
    expect(await logged(f, "sent a malformed answer")).toBe(
      `the upstream at 127.0.0.1:${port} sent a malformed answer to ListPermissions: ListPermissions read_at "yesterday" is not a revision`,
    );
    expect(await readiness(f.httpBase)).toBe("NOT_SERVING");
    expect((await checkOf(f, randomUUID())).code).toBe(S.UNAVAILABLE);
  });

  it("a change out of order or of no known kind is dropped with a line, and the stream resumed after the last good one", async () => {
    const server = createGrpcServer();
    let streams = 0;
    const afters: string[] = [];
    const impl: Partial<ServiceImpl<typeof AuthzService>> = {
      listPermissions: () => ({ permissions: [], readAt: "5" }),
      listRoles: () => ({ roles: [], readAt: "5" }),
      async *watchChanges(req) {
        afters.push(req.after);
        streams++;
        if (streams === 1) {
          yield { revision: "6", kind: ChangeKind.PROFILE, userId: NIL_UUID };
          yield { revision: "4", kind: ChangeKind.PROFILE, userId: NIL_UUID };
        } else if (streams === 2) {
          yield { revision: "7", kind: 9 as ChangeKind, userId: "" };
        }
        await new Promise(() => {});
      },
    };
    addGrpcService(server, AuthzService, impl, { logger: silent });
    const port = await bindGrpcServer(server, "127.0.0.1", 0);
    cleanups.push(() => server.forceShutdown());
    const f = await follower(`127.0.0.1:${port}`);
    expect(await logged(f, "out of order")).toContain("WatchChanges sent revision 4 after 6: out of order");
    expect(await logged(f, "is not a change kind")).toContain("WatchChanges kind 9 is not a change kind");
    await eventually(async () => afters.length >= 3, 10_000);
    // Resumed after the last change delivered, never before it.
    expect(afters).toEqual(["5", "6", "6"]);
    expect(f.app.reader.appliedRevision).toBe(6);
    await eventually(async () => (await readiness(f.httpBase)) === "SERVING", 5000);
  });

  it("a change stream cut again and again mid-burst: every change applied, once, in order", async () => {
    const db = await sqlite();
    const upstream: TestApp = await startTestApp(db.url);
    cleanups.push(() => upstream.close());
    // A TCP proxy between follower and upstream that can cut every connection at once.
    const sockets = new Set<Socket>();
    const proxy = createTcpServer((inbound) => {
      const outbound = connect(upstream.app.grpcPort, "127.0.0.1");
      for (const socket of [inbound, outbound]) {
        sockets.add(socket);
        socket.on("close", () => sockets.delete(socket));
        socket.on("error", () => {});
      }
      inbound.pipe(outbound).pipe(inbound);
    });
    await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
    cleanups.push(() => new Promise((resolve) => proxy.close(resolve)));
    cleanups.push(() => {
      for (const socket of sockets) socket.destroy();
    });
    const f = await follower(`127.0.0.1:${(proxy.address() as { port: number }).port}`, {
      AUTHZ_UPSTREAM_MAX_STALENESS_MS: "5000",
    });
    await eventually(async () => (await readiness(f.httpBase)) === "SERVING", 10_000);

    const users = Array.from({ length: 40 }, () => randomUUID());
    // Cached on the follower before the burst, so only the change stream can correct them.
    for (const user of users) await checkOf(f, user).catch(() => {});
    for (const user of users)
      await f.client.call(m.checkPermission, { userId: user, permission: "CAN_CREATE_PROJECTS" });
    const cutter = setInterval(() => {
      for (const socket of sockets) socket.destroy();
    }, 40);
    try {
      for (const [i, user] of users.entries()) {
        await upstream.app.authz.assignRole(user, i % 2 === 0 ? "Researcher" : "Viewer", NIL_UUID);
        if (i % 3 === 0)
          await upstream.app.authz.revokeRole(user, i % 2 === 0 ? "Researcher" : "Viewer", NIL_UUID);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    } finally {
      clearInterval(cutter);
    }
    const last = await upstream.app.store.currentRevision();
    await eventually(async () => f.app.reader.appliedRevision >= last, 15_000);
    for (const [i, user] of users.entries()) {
      const expected = i % 2 === 0 && i % 3 !== 0;
      const answer = await f.client.call(m.checkPermission, {
        userId: user,
        permission: "CAN_CREATE_PROJECTS",
      });
      expect({ i, allowed: answer.allowed }).toEqual({ i, allowed: expected });
    }
    expect(f.messages().some((message) => message.startsWith("the change stream broke"))).toBe(true);
    expect(
      f.messages().filter((message) => message.includes("malformed") || message.includes("out of order")),
    ).toEqual([]);
    expect(await readiness(f.httpBase)).toBe("SERVING");
  });
});
