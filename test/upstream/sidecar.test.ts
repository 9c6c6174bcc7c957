// A follower as the sidecar of SIDECARS.md §5 guarding FLIP's API: Envoy's ext_authz Check and
// /forward-auth answered locally from its caches (deploy/routes.yaml, JWTs against real keys), kept right by
// the upstream's changes, failing closed once the upstream has been gone past the staleness bound.

import { readFileSync } from "node:fs";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  CheckRequestSchema,
  type CheckResponse,
  CheckResponseSchema,
} from "../../gen/envoy/service/auth/v3/external_auth_pb.ts";
import { NIL_UUID } from "../../src/authz/ids.ts";
import { type AppDatabase, createSqliteDatabase, eventually } from "../helpers/app.ts";
import { handledCalls, readiness, startTestFollower, type TestFollower } from "../helpers/follower.ts";
import {
  type GuardedApp,
  ROUTES_FILE,
  SERVICE_TOKEN,
  send,
  startGuardedApp,
  USERS,
} from "../helpers/guarded-app.ts";
import { CLIENT_ID, ISSUER, writeTempFile } from "../helpers/keys.ts";

const CHECK_PATH = "/envoy.service.auth.v3.Authorization/Check";

describe("a follower guarding FLIP's API", () => {
  let db: AppDatabase;
  let upstream: GuardedApp;
  let follower: TestFollower;
  let envoy: grpc.Client;

  const followerEnv = (routesFile: string) => ({
    AUTHZ_UPSTREAM_TOKEN: SERVICE_TOKEN,
    AUTHZ_UPSTREAM_MAX_STALENESS_MS: "1500",
    AUTHZ_JWT_ISSUER: ISSUER,
    AUTHZ_JWT_AUDIENCE: CLIENT_ID,
    AUTHZ_JWKS_FILE: upstream.pool.jwksFile,
    AUTHZ_ROUTES_FILE: routesFile,
  });

  beforeAll(async () => {
    db = await createSqliteDatabase();
    upstream = await startGuardedApp(db);
    follower = await startTestFollower(upstream.grpcTarget, followerEnv(ROUTES_FILE));
    envoy = new grpc.Client(follower.grpcTarget, grpc.credentials.createInsecure());
    await eventually(async () => (await readiness(follower.httpBase)) === "SERVING", 10_000);
  });
  afterAll(async () => {
    envoy?.close();
    await follower?.close();
    await upstream?.close();
    await db?.close();
  });

  /** What Envoy asks: may `method path` pass with this authorization header? */
  const check = (method: string, path: string, authorization?: string) =>
    new Promise<CheckResponse>((resolve, reject) => {
      const headers: Record<string, string> = { ":method": method, ":path": path };
      if (authorization !== undefined) headers.authorization = authorization;
      const request = create(CheckRequestSchema, {
        attributes: { request: { http: { method, path, headers } } },
      });
      envoy.makeUnaryRequest(
        CHECK_PATH,
        (value: Uint8Array) => Buffer.from(value),
        (value: Buffer) => fromBinary(CheckResponseSchema, value),
        toBinary(CheckRequestSchema, request),
        new grpc.Metadata(),
        { deadline: Date.now() + 10_000 },
        (error, response) => (error || !response ? reject(error) : resolve(response)),
      );
    });
  const decision = (response: CheckResponse) => ({
    code: response.status?.code,
    http: response.httpResponse.case === "deniedResponse" ? response.httpResponse.value.status?.code : 200,
    user:
      response.httpResponse.case === "okResponse"
        ? response.httpResponse.value.headers.find((h) => h.header?.key === "x-flip-user-id")?.header?.value
        : undefined,
  });
  const forwardAuth = (method: string, uri: string, authorization?: string) =>
    send(`${follower.httpBase}/forward-auth`, {
      headers: {
        "x-forwarded-method": method,
        "x-forwarded-uri": uri,
        ...(authorization !== undefined && { authorization }),
      },
    });

  it("answers Envoy's Check from its caches: allowed with the user id, 403, 401, public", async () => {
    const { bearer } = upstream;
    // Warm: the users' roles are cached on the follower after one round.
    await check("POST", "/api/projects", bearer.researcher);
    await check("POST", "/api/projects", bearer.viewer);
    const before = await handledCalls(upstream.httpBase, "GetProfile");
    for (let i = 0; i < 10; i++) {
      expect(decision(await check("POST", "/api/projects", bearer.researcher))).toEqual({
        code: 0,
        http: 200,
        user: USERS.researcher,
      });
      expect(decision(await check("POST", "/api/projects", bearer.viewer))).toMatchObject({
        code: 7,
        http: 403,
      });
      expect(decision(await check("POST", "/api/projects"))).toMatchObject({ code: 16, http: 401 });
      expect(decision(await check("GET", "/api/health"))).toMatchObject({ code: 0, http: 200 });
    }
    expect(await handledCalls(upstream.httpBase, "GetProfile")).toBe(before);
  });

  it("answers /forward-auth the same way on its HTTP listener", async () => {
    const allowed = await forwardAuth("POST", "/api/projects", upstream.bearer.researcher);
    expect(allowed.status).toBe(200);
    expect(allowed.headers["x-flip-user-id"]).toBe(USERS.researcher);
    expect((await forwardAuth("POST", "/api/projects", upstream.bearer.viewer)).status).toBe(403);
    expect((await forwardAuth("POST", "/api/projects")).status).toBe(401);
  });

  it("a role granted on the upstream reaches the sidecar's decisions through the change stream", async () => {
    expect(decision(await check("DELETE", "/api/projects/p1", upstream.bearer.viewer))).toMatchObject({
      http: 403,
    });
    await upstream.app.authz.assignRole(USERS.viewer, "Admin", NIL_UUID);
    try {
      await eventually(
        async () => decision(await check("DELETE", "/api/projects/p1", upstream.bearer.viewer)).http === 200,
        5000,
      );
    } finally {
      await upstream.app.authz.revokeRole(USERS.viewer, "Admin", NIL_UUID);
    }
    await eventually(
      async () => decision(await check("DELETE", "/api/projects/p1", upstream.bearer.viewer)).http === 403,
      5000,
    );
  });

  it("a route naming a permission the upstream does not know: a clear log line, and the route denies", async () => {
    const routes = writeTempFile(
      "routes.yaml",
      readFileSync(ROUTES_FILE, "utf8").replace("CAN_CREATE_PROJECTS", "CAN_FLY_TO_THE_MOON"),
    );
    const odd = await startTestFollower(upstream.grpcTarget, followerEnv(routes));
    try {
      await eventually(
        async () =>
          odd
            .messages()
            .includes("AUTHZ_ROUTES_FILE: a route names a permission the upstream does not know; it denies"),
        10_000,
      );
      const answer = await send(`${odd.httpBase}/forward-auth`, {
        headers: {
          "x-forwarded-method": "POST",
          "x-forwarded-uri": "/api/projects",
          authorization: upstream.bearer.admin,
        },
      });
      expect(answer.status).toBe(403);
    } finally {
      await odd.close();
    }
  });

  it("past the staleness bound with the upstream gone, it fails closed: Check denies, /forward-auth 503", async () => {
    await upstream.close();
    await eventually(async () => (await readiness(follower.httpBase)) === "NOT_SERVING", 10_000);
    expect(decision(await check("POST", "/api/projects", upstream.bearer.researcher))).toMatchObject({
      http: 403,
    });
    expect((await forwardAuth("POST", "/api/projects", upstream.bearer.researcher)).status).toBe(503);
  });
});
