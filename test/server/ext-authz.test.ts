// Envoy's ext_authz v3 Check on the gRPC listener of the real app (SQLite file, deploy/routes.yaml, JWTs
// against real keys): every decision of SIDECARS.md §2 as Envoy receives it, malformed requests denied
// rather than failed, answers from the caches, metrics by route and decision, and buf curl by reflection.

import { execFile } from "node:child_process";
import { resolve } from "node:path";
import { promisify } from "node:util";
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HeaderValueOption_HeaderAppendAction as Append } from "../../gen/envoy/config/core/v3/base_pb.ts";
import {
  type CheckRequest,
  CheckRequestSchema,
  type CheckResponse,
  CheckResponseSchema,
} from "../../gen/envoy/service/auth/v3/external_auth_pb.ts";
import { type AppDatabase, createSqliteDatabase, eventually } from "../helpers/app.ts";
import { type GuardedApp, SERVICE_TOKEN, send, startGuardedApp, USERS } from "../helpers/guarded-app.ts";
import { signAccessToken } from "../helpers/keys.ts";

const run = promisify(execFile);
const BUF = resolve("node_modules/.bin/buf");
const CHECK_PATH = "/envoy.service.auth.v3.Authorization/Check";

let db: AppDatabase;
let guarded: GuardedApp;
let client: grpc.Client;

beforeAll(async () => {
  db = await createSqliteDatabase();
  guarded = await startGuardedApp(db);
  client = new grpc.Client(guarded.grpcTarget, grpc.credentials.createInsecure());
});

afterAll(async () => {
  client?.close();
  await guarded?.close();
  await db?.close();
});

/** Sends raw bytes as a CheckRequest; resolves with the decoded CheckResponse (the RPC must succeed). */
function checkBytes(bytes: Uint8Array): Promise<CheckResponse> {
  return new Promise((resolveCheck, reject) => {
    client.makeUnaryRequest(
      CHECK_PATH,
      (value: Uint8Array) => Buffer.from(value),
      (value: Buffer) => fromBinary(CheckResponseSchema, value),
      bytes,
      new grpc.Metadata(),
      { deadline: Date.now() + 10_000 },
      (error, response) => (error || !response ? reject(error) : resolveCheck(response)),
    );
  });
}

function check(init: MessageInitShape<typeof CheckRequestSchema>): Promise<CheckResponse> {
  return checkBytes(toBinary(CheckRequestSchema, create(CheckRequestSchema, init)));
}

/** A CheckRequest as Envoy sends it: raw path with query, lower-case header map, and more we do not read. */
function envoyRequest(
  method: string,
  path: string,
  authorization?: string,
): MessageInitShape<typeof CheckRequestSchema> {
  const headers: Record<string, string> = {
    ":authority": "api.flip.example",
    ":method": method,
    ":path": path,
    "user-agent": "curl/8",
    "x-request-id": "0d6ac3b2-5c1e-4d1b-9a3c-7b8f2e1d0c9a",
  };
  if (authorization !== undefined) headers.authorization = authorization;
  return {
    attributes: {
      request: {
        time: { seconds: BigInt(Math.floor(Date.now() / 1000)) },
        http: {
          id: "1",
          method,
          path,
          host: "api.flip.example",
          scheme: "http",
          protocol: "HTTP/1.1",
          headers,
        },
      },
      contextExtensions: { app: "flip-api" },
    },
  };
}

function allowedAs(response: CheckResponse, userId: string): void {
  expect(response.status?.code).toBe(0);
  expect(response.httpResponse.case).toBe("okResponse");
  const ok = response.httpResponse.value as Extract<
    CheckResponse["httpResponse"],
    { case: "okResponse" }
  >["value"];
  expect(ok.headersToRemove).toEqual([]);
  expect(ok.headers).toHaveLength(1);
  expect(ok.headers[0]?.header).toMatchObject({ key: "x-flip-user-id", value: userId });
  expect(ok.headers[0]?.appendAction).toBe(Append.OVERWRITE_IF_EXISTS_OR_ADD);
  expect(ok.headers[0]?.append).toBe(false);
}

function denied(response: CheckResponse, status: 401 | 403): { code: string; message: string } {
  expect(response.status?.code).toBe(status === 401 ? 16 : 7);
  expect(response.httpResponse.case).toBe("deniedResponse");
  const deniedResponse = response.httpResponse.value as Extract<
    CheckResponse["httpResponse"],
    { case: "deniedResponse" }
  >["value"];
  expect(deniedResponse.status?.code).toBe(status);
  const headers = Object.fromEntries(deniedResponse.headers.map((h) => [h.header?.key, h.header?.value]));
  expect(headers["content-type"]).toBe("application/json");
  expect(headers["www-authenticate"]).toBe(status === 401 ? "Bearer" : undefined);
  const body = JSON.parse(deniedResponse.body) as { code: string; message: string };
  expect(body.code).toBe(status === 401 ? "unauthenticated" : "permission_denied");
  return body;
}

describe("decisions", () => {
  it("a user holding the route's permission is allowed, x-flip-user-id overwriting any client value", async () => {
    allowedAs(
      await check(envoyRequest("POST", "/api/projects", guarded.bearer.researcher)),
      USERS.researcher,
    );
    allowedAs(await check(envoyRequest("POST", "/api/projects?draft=1", guarded.bearer.admin)), USERS.admin);
    allowedAs(await check(envoyRequest("DELETE", "/api/projects/42", guarded.bearer.admin)), USERS.admin);
  });

  it("an authenticated route lets any verified user through, even one with no role", async () => {
    allowedAs(await check(envoyRequest("GET", "/api/me", guarded.bearer.nobody)), USERS.nobody);
    allowedAs(
      await check(envoyRequest("PUT", "/api/me/settings/email", guarded.bearer.viewer)),
      USERS.viewer,
    );
  });

  it("a public route is allowed with or without a token, and removes a client-sent x-flip-user-id", async () => {
    for (const authorization of [undefined, guarded.bearer.admin, "Bearer garbage"]) {
      const response = await check(envoyRequest("GET", "/api/health", authorization));
      expect(response.status?.code).toBe(0);
      expect(response.httpResponse).toMatchObject({
        case: "okResponse",
        value: { headers: [], headersToRemove: ["x-flip-user-id"] },
      });
    }
  });

  it("a user without the permission is denied 403", async () => {
    const body = denied(await check(envoyRequest("POST", "/api/projects", guarded.bearer.viewer)), 403);
    expect(body.message).toBe("the user does not hold the permission this route needs");
    denied(await check(envoyRequest("DELETE", "/api/projects/42", guarded.bearer.researcher)), 403);
  });

  it("no matching route is denied 403, with or without a token", async () => {
    for (const [method, path] of [
      ["GET", "/api/projects"],
      ["GET", "/api/health/"],
      ["GET", "/API/health"],
      ["DELETE", "/api/projects/"],
      ["GET", "/admin"],
    ] as const) {
      for (const authorization of [undefined, guarded.bearer.admin]) {
        const body = denied(await check(envoyRequest(method, path, authorization)), 403);
        expect(body.message).toBe("no route allows this request");
      }
    }
  });

  it("a missing, malformed, expired or unverifiable token on a guarded route is 401 with WWW-Authenticate", async () => {
    const stranger = `Bearer ${await signAccessToken(guarded.pool.stranger, USERS.admin)}`;
    for (const [authorization, message] of [
      [undefined, "missing credentials"],
      ["", "missing credentials"],
      ["Basic YWRtaW46YWRtaW4=", "malformed authorization header"],
      [guarded.expired, "invalid token: token expired"],
      [`Bearer ${SERVICE_TOKEN}`, "invalid token: malformed token"],
      [stranger, "invalid token: unknown signing key"],
    ] as const) {
      const body = denied(await check(envoyRequest("POST", "/api/projects", authorization)), 401);
      expect(body.message).toBe(message);
    }
  });

  it("every path attack is denied 403 without matching, even for the Admin", async () => {
    for (const path of [
      "/api/projects/..%2f..%2fadmin",
      "/api/me/../projects",
      "/api/me/%2e%2e/projects",
      "/api/me/%252e%252e/projects",
      "/api/me/..;/projects",
      "/api//projects",
      "/api/me%2F..%2Fprojects",
      "/api/me%5c..%5cprojects",
      "/api/me\\..\\projects",
      "/api/me/%00",
      "/api/me/%C0%AE%C0%AE",
      "/api/me/%zz",
      "api/me",
      `/api/me/${"a".repeat(100_000)}`,
    ]) {
      const response = await check(envoyRequest("DELETE", path, guarded.bearer.admin));
      expect(denied(response, 403).message, path).toMatch(/^the path /);
    }
  });
});

describe("what Envoy may send", () => {
  it("headers in header_map (encode_raw_headers: true) are read like the map", async () => {
    const request = envoyRequest("POST", "/api/projects");
    const http = request.attributes?.request?.http as MessageInitShape<
      typeof CheckRequestSchema
    >["attributes"] &
      Record<string, unknown>;
    http.headers = {};
    http.headerMap = {
      headers: [
        { key: ":path", rawValue: new TextEncoder().encode("/api/projects") },
        { key: "authorization", rawValue: new TextEncoder().encode(guarded.bearer.researcher) },
      ],
    };
    allowedAs(await check(request), USERS.researcher);
  });

  it("two credentials in header_map are no credential: 401", async () => {
    const request = envoyRequest("POST", "/api/projects");
    const http = request.attributes?.request?.http as Record<string, unknown>;
    http.headerMap = {
      headers: [
        { key: "authorization", value: guarded.bearer.viewer },
        { key: "authorization", value: guarded.bearer.researcher },
      ],
    };
    denied(await check(request), 401);
  });

  it("a CheckRequest without attributes.request.http is denied 403, not an RPC error", async () => {
    for (const init of [{}, { attributes: {} }, { attributes: { request: {} } }]) {
      const body = denied(await check(init as CheckRequest), 403);
      expect(body.message).toBe("the check request describes no HTTP request");
    }
  });

  it("bytes that are no CheckRequest are denied 403, not an RPC error", async () => {
    for (const bytes of [
      Buffer.from([0x0a, 0xff, 0xff]),
      Buffer.from("not protobuf at all"),
      Buffer.from([0xff]),
    ]) {
      const body = denied(await checkBytes(bytes), 403);
      expect(body.message).toBe("the check request is malformed");
    }
  });

  it("strange methods and headers are denied, never a crash", async () => {
    denied(await check(envoyRequest("post", "/api/projects", guarded.bearer.admin)), 403);
    denied(await check(envoyRequest("", "/api/projects", guarded.bearer.admin)), 403);
    denied(await check(envoyRequest("POST", "", guarded.bearer.admin)), 403);
    denied(await check(envoyRequest("POST", "/api/projects", `Bearer ${"x".repeat(200_000)}`)), 401);
    denied(await check(envoyRequest("POST", "/api/projects", "Bearer \u0000\u00ff")), 401);
  });
});

describe("served from the caches, counted in metrics", () => {
  it("a cached user's decisions cost no database read", async () => {
    const { reader } = guarded.app;
    allowedAs(
      await check(envoyRequest("POST", "/api/projects", guarded.bearer.researcher)),
      USERS.researcher,
    );
    const before = { ...reader.stats };
    for (let i = 0; i < 20; i++) {
      allowedAs(
        await check(envoyRequest("POST", "/api/projects", guarded.bearer.researcher)),
        USERS.researcher,
      );
    }
    expect(reader.stats.databaseReads).toBe(before.databaseReads);
    expect(reader.stats.misses).toBe(before.misses);
    expect(reader.stats.hits).toBe(before.hits + 20);
  });

  it("authz_route_decisions_total counts decisions by route and decision", async () => {
    const metrics = async () => (await send(`${guarded.httpBase}/metrics`)).body;
    const count = (text: string, route: string, decision: string) =>
      Number(
        new RegExp(
          `^authz_route_decisions_total\\{route="${route.replace(/\*/g, "\\*")}",decision="${decision}"\\} (\\d+)$`,
          "m",
        ).exec(text)?.[1] ?? 0,
      );
    const before = await metrics();
    await check(envoyRequest("DELETE", "/api/projects/1", guarded.bearer.admin));
    await check(envoyRequest("DELETE", "/api/projects/1", guarded.bearer.viewer));
    await check(envoyRequest("DELETE", "/api/projects/1"));
    await check(envoyRequest("GET", "/nowhere"));
    await checkBytes(Buffer.from([0xff]));
    const after = await metrics();
    expect(count(after, "/api/projects/*", "allow") - count(before, "/api/projects/*", "allow")).toBe(1);
    expect(count(after, "/api/projects/*", "deny") - count(before, "/api/projects/*", "deny")).toBe(1);
    expect(
      count(after, "/api/projects/*", "unauthenticated") -
        count(before, "/api/projects/*", "unauthenticated"),
    ).toBe(1);
    expect(count(after, "none", "deny") - count(before, "none", "deny")).toBe(1);
    expect(count(after, "none", "error") - count(before, "none", "error")).toBe(1);
    // Check is an RPC like the others under go-grpc-prometheus's names: always OK (the decision is inside);
    // the malformed one was not received as a message.
    const check_ = `grpc_type="unary",grpc_service="envoy.service.auth.v3.Authorization",grpc_method="Check",transport="grpc"`;
    const series = (text: string, name: string, extra = "") =>
      Number(new RegExp(`^${name}\\{${check_}${extra}\\} (\\d+)$`, "m").exec(text)?.[1] ?? 0);
    const delta = (name: string, extra = "") => series(after, name, extra) - series(before, name, extra);
    expect(delta("grpc_server_started_total")).toBe(5);
    expect(delta("grpc_server_handled_total", ',grpc_code="OK"')).toBe(5);
    expect(delta("grpc_server_msg_received_total")).toBe(4);
    expect(delta("grpc_server_msg_sent_total")).toBe(5);
    expect(delta("grpc_server_handling_seconds_count")).toBe(5);
  });

  it("a permission removed while running makes its route deny", async () => {
    await db.sql("DELETE FROM permission WHERE permission_name = ?", ["CAN_DELETE_ANY_PROJECT"]);
    await eventually(async () => {
      const response = await check(envoyRequest("DELETE", "/api/projects/7", guarded.bearer.admin));
      return response.status?.code === 7;
    }, 5000);
    allowedAs(await check(envoyRequest("POST", "/api/projects", guarded.bearer.admin)), USERS.admin);
  });
});

describe("buf curl, by reflection alone", () => {
  it("lists the Authorization service and calls Check with JSON", async () => {
    const base = `http://${guarded.grpcTarget}`;
    const listed = await run(BUF, [
      "curl",
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      "--list-services",
      base,
    ]);
    expect(listed.stdout.split("\n")).toContain("envoy.service.auth.v3.Authorization");
    const body = JSON.stringify({
      attributes: {
        request: {
          http: {
            method: "POST",
            path: "/api/projects",
            headers: { authorization: guarded.bearer.researcher },
          },
        },
      },
    });
    const { stdout } = await run(BUF, [
      "curl",
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      "-d",
      body,
      `${base}${CHECK_PATH}`,
    ]);
    expect(JSON.parse(stdout)).toEqual({
      status: {},
      okResponse: {
        headers: [
          {
            header: { key: "x-flip-user-id", value: USERS.researcher },
            append: false,
            appendAction: "OVERWRITE_IF_EXISTS_OR_ADD",
          },
        ],
      },
    });
  });
});
