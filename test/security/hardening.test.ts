// Hardening of the real app on both listeners: a request over AUTHZ_MAX_REQUEST_BYTES is refused with
// RESOURCE_EXHAUSTED and an oversized header is refused cleanly, deadlines end calls with
// DEADLINE_EXCEEDED, and in every case the server keeps answering and logs no unexpected error.

import { gzipSync } from "node:zlib";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthzService, CheckPermissionsRequestSchema } from "../../gen/flip/authz/v1/authz_pb.ts";
import { type AppDatabase, createSqliteDatabase } from "../helpers/app.ts";
import { CLIENT_ID, ISSUER, signAccessToken } from "../helpers/keys.ts";
import {
  createConnectClient,
  createGrpcClient,
  createTestPool,
  type ListenerClient,
  rawRequest,
  S,
  type SecureApp,
  startSecureApp,
} from "../helpers/secure-app.ts";

const m = AuthzService.method;
const TOKEN = "hardening-service-token-0123456789";
const MAX_BYTES = 2048;
const ADMIN = "5e0c2a1b-3d4f-4a6b-8c9d-0e1f2a3b4c5d";
const service = { authorization: `Bearer ${TOKEN}` };

/** CheckPermissions whose encoded request is about `checks` × ~45 bytes. */
const checks = (count: number) => ({
  checks: Array.from({ length: count }, () => ({ userId: ADMIN, permission: "CAN_MANAGE_USERS" })),
});

describe("hardening, SQLite file", () => {
  let db: AppDatabase;
  let t: SecureApp;
  let adminToken: string;

  beforeAll(async () => {
    db = await createSqliteDatabase();
    const pool = await createTestPool();
    t = await startSecureApp(db.url, {
      AUTHZ_SERVICE_TOKENS: TOKEN,
      AUTHZ_JWT_ISSUER: ISSUER,
      AUTHZ_JWT_AUDIENCE: CLIENT_ID,
      AUTHZ_JWKS_FILE: pool.jwksFile,
      AUTHZ_MAX_REQUEST_BYTES: String(MAX_BYTES),
      AUTHZ_LOG_LEVEL: "trace",
    });
    await t.app.authz.assignRole(ADMIN, "Admin", "00000000-0000-0000-0000-000000000000");
    adminToken = `Bearer ${await signAccessToken(pool.ec, ADMIN)}`;
  });
  afterAll(async () => {
    await t?.close();
    await db?.close();
  });

  /** Entries the app logged at error level or above (an unexpected error somewhere). */
  const errorsLogged = () =>
    t.logs
      .map((line) => JSON.parse(line) as { level: number; msg: string })
      .filter((entry) => entry.level >= 50);

  describe.each(["grpc", "connect"] as const)("on the %s listener", (listener) => {
    let c: ListenerClient;
    beforeAll(() => {
      c = listener === "grpc" ? createGrpcClient(t.grpcTarget) : createConnectClient(t.httpBase);
    });
    afterAll(() => c?.close());

    it(`answers a request under ${MAX_BYTES} bytes and refuses one over it with RESOURCE_EXHAUSTED, then answers again`, async () => {
      // Connect JSON is larger than the binary encoding: size each request for its listener.
      const small = listener === "grpc" ? 30 : 15;
      const ok = await c.unary(m.checkPermissions, checks(small), service);
      expect(ok.code, ok.message).toBe(S.OK);
      expect((ok.body as { results: unknown[] }).results).toHaveLength(small);

      const big = await c.unary(m.checkPermissions, checks(60), service);
      expect(big.code).toBe(S.RESOURCE_EXHAUSTED);
      expect(big.message).toMatch(listener === "grpc" ? /larger than max \(\d+ vs 2048\)/ : /2048/);
      if (listener === "connect") expect(big.httpStatus).toBe(429);

      // Oversized text in a write: refused before the guard runs, and nothing is written.
      const write = await c.unary(
        m.updateProfile,
        { userId: ADMIN, name: "x".repeat(MAX_BYTES + 10) },
        { authorization: adminToken },
      );
      expect(write.code).toBe(S.RESOURCE_EXHAUSTED);
      expect(write.message).toMatch(listener === "grpc" ? /larger than max \(\d+ vs 2048\)/ : /2048/);
      expect(await db.sql("SELECT name FROM user_profile WHERE user_id = ?", [ADMIN])).toEqual([]);
      expect(
        await db.sql("SELECT action FROM users_audit WHERE user_id = ? AND action = 'Updated user profile'", [
          ADMIN,
        ]),
      ).toEqual([]);

      const after = await c.unary(
        m.checkPermission,
        { userId: ADMIN, permission: "CAN_MANAGE_USERS" },
        service,
      );
      expect(after).toMatchObject({ code: S.OK, body: { allowed: true } });
      expect(errorsLogged()).toEqual([]);
    });
  });

  /** Opens WatchChanges with a 200 ms deadline; resolves to how it ended and after how long. */
  async function watchUntilDeadline(c: ListenerClient) {
    const stream = c.stream(m.watchChanges, {}, { ...service, timeoutMs: 200 });
    const started = Date.now();
    try {
      const end = await stream.next(5000);
      return { end, ms: Date.now() - started };
    } finally {
      stream.close();
    }
  }

  it("a WatchChanges stream on gRPC ends at its deadline with DEADLINE_EXCEEDED, and the server keeps serving", async () => {
    const c = createGrpcClient(t.grpcTarget);
    try {
      const { end, ms } = await watchUntilDeadline(c);
      expect(end).toMatchObject({ end: { code: S.DEADLINE_EXCEEDED } });
      expect(ms).toBeGreaterThanOrEqual(150);
      expect((await c.unary(m.listRoles, {}, service)).code).toBe(S.OK);
    } finally {
      c.close();
    }
    expect(errorsLogged()).toEqual([]);
  });

  it("a WatchChanges stream on Connect ends at its deadline with DEADLINE_EXCEEDED", async () => {
    const c = createConnectClient(t.httpBase);
    const { end, ms } = await watchUntilDeadline(c);
    expect(ms).toBeGreaterThanOrEqual(150);
    expect(end).toMatchObject({ end: { code: S.DEADLINE_EXCEEDED } });
  });

  it("after a WatchChanges stream on Connect ends at its deadline, the server keeps serving", async () => {
    const c = createConnectClient(t.httpBase);
    const { end, ms } = await watchUntilDeadline(c);
    expect(ms).toBeGreaterThanOrEqual(150);
    expect(ms).toBeLessThan(2000);
    expect(end).toHaveProperty("end");
    expect((await c.unary(m.listRoles, {}, service)).code).toBe(S.OK);
    expect(errorsLogged()).toEqual([]);
  });

  it("a unary call with a 1 ms deadline gets DEADLINE_EXCEEDED on gRPC, and the server is fine", async () => {
    // A fresh channel: connecting alone takes longer than 1 ms.
    for (let i = 0; i < 3; i++) {
      const client = createGrpcClient(t.grpcTarget);
      try {
        const outcome = await client.unary(
          m.checkPermission,
          { userId: ADMIN, permission: "CAN_MANAGE_USERS", fullyConsistent: true },
          { authorization: adminToken, timeoutMs: 1 },
        );
        expect(outcome).toMatchObject({
          code: S.DEADLINE_EXCEEDED,
          message: expect.stringMatching(/deadline/i),
        });
        const next = await client.unary(
          m.checkPermission,
          { userId: ADMIN, permission: "CAN_MANAGE_USERS" },
          {
            authorization: adminToken,
          },
        );
        expect(next).toMatchObject({ code: S.OK, body: { allowed: true } });
      } finally {
        client.close();
      }
    }
    expect(errorsLogged()).toEqual([]);
  });

  it("a Connect client with a 1 ms timeout gets DEADLINE_EXCEEDED; the server answers the raw header without error", async () => {
    const client = createClient(
      AuthzService,
      createConnectTransport({ baseUrl: t.httpBase, httpVersion: "1.1" }),
    );
    for (let i = 0; i < 5; i++) {
      const code = await client
        .checkPermission(
          { userId: ADMIN, permission: "CAN_MANAGE_USERS", fullyConsistent: true },
          { timeoutMs: 1, headers: { authorization: adminToken } },
        )
        .then(
          () => "OK",
          (error: unknown) => Code[ConnectError.from(error).code],
        );
      expect(code).toBe("DeadlineExceeded");
    }
    const answer = await client.checkPermission(
      { userId: ADMIN, permission: "CAN_MANAGE_USERS" },
      { headers: { authorization: adminToken } },
    );
    expect(answer.allowed).toBe(true);

    // Sent raw (no client-side timer), connect-timeout-ms 1: the server answers or says deadline_exceeded.
    const c = createConnectClient(t.httpBase);
    for (let i = 0; i < 5; i++) {
      const outcome = await c.unary(
        m.checkPermission,
        { userId: ADMIN, permission: "CAN_MANAGE_USERS", fullyConsistent: true },
        { authorization: adminToken, timeoutMs: 1 },
      );
      expect([S.OK, S.DEADLINE_EXCEEDED]).toContain(outcome.code);
    }
    expect(errorsLogged()).toEqual([]);
  });

  it("an oversized authorization header is refused without a crash on both listeners", async () => {
    const huge = `Bearer ${"a".repeat(64 * 1024)}`;
    const response = await rawRequest(`${t.httpBase}/flip.authz.v1.AuthzService/ListRoles`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: huge },
      body: "{}",
    });
    expect(response.status).toBe(431);
    const grpc = createGrpcClient(t.grpcTarget);
    try {
      const outcome = await grpc.unary(m.listRoles, {}, { authorization: huge, timeoutMs: 5000 });
      // grpc-js takes the header; the credential in it is simply not a token.
      expect({ code: outcome.code, message: outcome.message }).toEqual({
        code: S.UNAUTHENTICATED,
        message: "invalid token: malformed token",
      });
      expect(outcome.message).not.toContain("a".repeat(100));
      expect((await grpc.unary(m.listRoles, {}, service)).code).toBe(S.OK);
    } finally {
      grpc.close();
    }
    expect((await createConnectClient(t.httpBase).unary(m.listRoles, {}, service)).code).toBe(S.OK);
  });

  it("a small gzip body that inflates past the limit is refused on Connect (no zip bomb), and the server is fine", async () => {
    const json = JSON.stringify(checks(4000));
    const body = gzipSync(json);
    expect(body.length).toBeLessThan(MAX_BYTES);
    const response = await rawRequest(`${t.httpBase}/flip.authz.v1.AuthzService/CheckPermissions`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "content-encoding": "gzip",
        authorization: service.authorization,
      },
      body,
    });
    const answer = JSON.parse(response.body.toString()) as { code: string };
    expect({ status: response.status, code: answer.code }).toEqual({
      status: 429,
      code: "resource_exhausted",
    });
    // Under the limit, gzip is accepted.
    const small = await rawRequest(`${t.httpBase}/flip.authz.v1.AuthzService/CheckPermissions`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "content-encoding": "gzip",
        authorization: service.authorization,
      },
      body: gzipSync(JSON.stringify(checks(3))),
    });
    expect(small.status).toBe(200);
    expect((JSON.parse(small.body.toString()) as { results: unknown[] }).results).toHaveLength(3);
    expect(errorsLogged()).toEqual([]);
  });

  it("a gzip-compressed gRPC message that inflates past the limit gets RESOURCE_EXHAUSTED, and the server is fine", async () => {
    const client = new grpc.Client(t.grpcTarget, grpc.credentials.createInsecure(), {
      "grpc.default_compression_algorithm": 2, // gzip
    });
    const call = (count: number) =>
      new Promise<{ code: number; details: string }>((resolve) => {
        const metadata = new grpc.Metadata();
        metadata.set("authorization", service.authorization);
        client.makeUnaryRequest(
          "/flip.authz.v1.AuthzService/CheckPermissions",
          (value: Uint8Array) => Buffer.from(value),
          (bytes: Buffer) => bytes,
          toBinary(CheckPermissionsRequestSchema, create(CheckPermissionsRequestSchema, checks(count))),
          metadata,
          { deadline: Date.now() + 10_000 },
          (error) =>
            resolve(error ? { code: error.code, details: error.details } : { code: S.OK, details: "" }),
        );
      });
    try {
      expect(await call(3)).toEqual({ code: S.OK, details: "" });
      const big = await call(20_000);
      expect(big.code).toBe(S.RESOURCE_EXHAUSTED);
      expect(await call(3)).toEqual({ code: S.OK, details: "" });
    } finally {
      client.close();
    }
    expect(errorsLogged()).toEqual([]);
  });

  it("never logged a credential at trace level", () => {
    const log = t.logs.join("");
    expect(t.logs.length).toBeGreaterThan(0);
    expect(log).not.toContain(TOKEN);
    expect(log).not.toContain(adminToken.slice("Bearer ".length));
    for (const part of adminToken.slice("Bearer ".length).split(".")) expect(log).not.toContain(part);
  });
});
