// OpenTelemetry tracing seen from outside: a real `flip-authz serve` exporting to an OTLP/HTTP receiver the
// test runs. A trace started by the caller (W3C traceparent, in gRPC metadata and in HTTP headers) continues
// into the server span of the call and from there into the store spans of its database work, on SQLite
// and on PostgreSQL; the call's log lines carry the span's ids. Bad OTEL_* values stop the start, naming
// the variable; without an endpoint no @opentelemetry module is loaded at all.

import { randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { CheckRequestSchema, CheckResponseSchema } from "../../gen/envoy/service/auth/v3/external_auth_pb.ts";
import {
  AssignRoleRequestSchema,
  AssignRoleResponseSchema,
  AuthzService,
  CheckPermissionRequestSchema,
  CheckPermissionResponseSchema,
} from "../../gen/flip/authz/v1/authz_pb.ts";
import { methodPath } from "../../src/rpc/method-name.ts";
import { eventually } from "../helpers/app.ts";
import { runCli } from "../helpers/cli.ts";
import { readiness } from "../helpers/follower.ts";
import { createTestDatabase, postgresAvailable, type TestDatabase } from "../helpers/postgres.ts";
import { jsonLines, type ServeProcess, startServe, stopAll } from "../helpers/serve-process.ts";
import { type OtlpReceiver, type ReceivedSpan, startOtlpReceiver } from "./otlp-receiver.ts";

const TOKEN = "tracing-test-token-000001";
const CHECK = methodPath(AuthzService.method.checkPermission);
const ENVOY_CHECK = "/envoy.service.auth.v3.Authorization/Check";
const SERVER = 2;
const CLIENT = 3;
const ERROR = 2;

/** A caller's span context, as the traceparent header carries it. */
function callerContext() {
  const traceId = randomBytes(16).toString("hex");
  const spanId = randomBytes(8).toString("hex");
  return { traceId, spanId, traceparent: `00-${traceId}-${spanId}-01` };
}

/** A unary gRPC call of raw bytes with this metadata; the status code and the answer's bytes. */
function unary(
  client: grpc.Client,
  path: string,
  request: Uint8Array,
  metadata: Record<string, string>,
): Promise<{ code: number; answer?: Buffer }> {
  const sent = new grpc.Metadata();
  for (const [key, value] of Object.entries(metadata)) sent.set(key, value);
  return new Promise((resolve) => {
    client.makeUnaryRequest(
      path,
      (value: Buffer) => value,
      (bytes: Buffer) => bytes,
      Buffer.from(request),
      sent,
      (error, answer) => resolve(error ? { code: error.code } : { code: 0, answer: answer as Buffer }),
    );
  });
}

/** CheckPermission over gRPC with this metadata; the status code and the answer. */
async function check(
  client: grpc.Client,
  userId: string,
  metadata: Record<string, string>,
): Promise<{ code: number; allowed?: boolean }> {
  const request = create(CheckPermissionRequestSchema, { userId, permission: "can_manage_users" });
  const { code, answer } = await unary(
    client,
    CHECK,
    toBinary(CheckPermissionRequestSchema, request),
    metadata,
  );
  return answer === undefined
    ? { code }
    : { code, allowed: fromBinary(CheckPermissionResponseSchema, answer).allowed };
}

const databases: { name: string; skip: boolean; system: string }[] = [
  { name: "SQLite", skip: false, system: "sqlite" },
  { name: "PostgreSQL", skip: !postgresAvailable, system: "postgresql" },
];

describe.each(databases)(
  "a caller's trace continues through flip-authz into its $name spans",
  ({ name, skip, system }) => {
    let dir: string;
    let database: TestDatabase | undefined;
    let receiver: OtlpReceiver;
    let serve: ServeProcess;
    let client: grpc.Client;
    const grpcCaller = callerContext();
    const connectCaller = callerContext();
    const deniedCaller = callerContext();
    const envoyCaller = callerContext();
    const forwardCaller = callerContext();
    const userId = randomUUID();
    let spans: ReceivedSpan[];
    let logs: Record<string, unknown>[];

    beforeAll(async () => {
      if (skip) return;
      dir = mkdtempSync(join(tmpdir(), "authz-tracing-"));
      receiver = await startOtlpReceiver();
      const routes = join(dir, "routes.yaml");
      writeFileSync(routes, "routes:\n  - path: /api/health\n    public: true\n");
      let url = `sqlite:${join(dir, "authz.db")}`;
      if (system === "postgresql") {
        database = await createTestDatabase();
        url = database.url;
      }
      serve = await startServe(
        {
          DATABASE_URL: url,
          AUTHZ_SERVICE_TOKENS: TOKEN,
          AUTHZ_ACCESS_LOG: "true",
          OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
          OTEL_EXPORTER_OTLP_HEADERS: "x-tenant=flip%20test",
          OTEL_SERVICE_NAME: "authz-under-test",
          OTEL_RESOURCE_ATTRIBUTES: "deployment.environment.name=test,service.name=overridden",
          AUTHZ_ROUTES_FILE: routes,
        },
        { name: `tracing-${name}` },
      );
      client = new grpc.Client(serve.grpcTarget, grpc.credentials.createInsecure());

      // gRPC: a user no cache has seen, so the check reads the database.
      expect(
        await check(client, userId, {
          authorization: `Bearer ${TOKEN}`,
          traceparent: grpcCaller.traceparent,
        }),
      ).toEqual({ code: 0, allowed: false });
      // Connect (JSON over HTTP/1.1): a check that must read the database.
      const checked = await fetch(`${serve.httpBase}${CHECK}`, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          authorization: `Bearer ${TOKEN}`,
          traceparent: connectCaller.traceparent,
          tracestate: "vendor=abc",
        },
        body: JSON.stringify({ userId, permission: "can_manage_users", fullyConsistent: true }),
      });
      expect(checked.status).toBe(200);
      // proto3 JSON leaves out a false `allowed`.
      expect(await checked.json()).not.toHaveProperty("allowed");
      // A refused call: its span says which code, without calling it a server error.
      expect(await check(client, userId, { traceparent: deniedCaller.traceparent })).toEqual({
        code: grpc.status.UNAUTHENTICATED,
      });
      // The route guard: Envoy's Check (gRPC) and forward auth (HTTP).
      const envoy = await unary(
        client,
        ENVOY_CHECK,
        toBinary(
          CheckRequestSchema,
          create(CheckRequestSchema, {
            attributes: { request: { http: { method: "GET", path: "/api/health", headers: {} } } },
          }),
        ),
        { traceparent: envoyCaller.traceparent },
      );
      expect(envoy.code).toBe(0);
      expect(fromBinary(CheckResponseSchema, envoy.answer as Buffer).status?.code ?? 0).toBe(0);
      const forwarded = await fetch(`${serve.httpBase}/forward-auth`, {
        headers: {
          "x-forwarded-method": "GET",
          "x-forwarded-uri": "/api/health",
          traceparent: forwardCaller.traceparent,
        },
      });
      expect(forwarded.status).toBe(200);
      await forwarded.arrayBuffer();
      client.close();
      // SIGTERM: the drain ends with the spans still queued sent to the receiver.
      expect(await serve.stop()).toBe(0);
      spans = receiver.spans;
      logs = jsonLines(serve.logs);
    }, 90_000);

    afterAll(async () => {
      client?.close();
      await stopAll();
      await receiver?.close();
      await database?.drop();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    const serverSpanOf = (traceId: string) => {
      const found = spans.filter((span) => span.traceId === traceId && span.kind === SERVER);
      expect(found, `one server span in trace ${traceId}: ${JSON.stringify(spans, null, 1)}`).toHaveLength(1);
      return found[0] as ReceivedSpan;
    };

    it.skipIf(skip)(
      "exports OTLP/HTTP protobuf to <endpoint>/v1/traces with the configured headers and resource",
      () => {
        expect(receiver.requests.length).toBeGreaterThan(0);
        for (const request of receiver.requests) {
          expect(request.path).toBe("/v1/traces");
          expect(request.contentType).toBe("application/x-protobuf");
          expect(request.headers["x-tenant"]).toBe("flip test");
        }
        const span = serverSpanOf(grpcCaller.traceId);
        expect(span.resource).toMatchObject({
          "service.name": "authz-under-test",
          "deployment.environment.name": "test",
          "telemetry.sdk.language": "nodejs",
        });
        expect(span.scope).toBe("flip-authz");
      },
    );

    it.skipIf(skip)("gRPC: the server span continues the caller's trace, with the rpc.* attributes", () => {
      const span = serverSpanOf(grpcCaller.traceId);
      expect(span).toMatchObject({
        parentSpanId: grpcCaller.spanId,
        name: "flip.authz.v1.AuthzService/CheckPermission",
        kind: SERVER,
        status: { code: 0 },
      });
      expect(span.attributes).toMatchObject({
        "rpc.system": "grpc",
        "rpc.service": "flip.authz.v1.AuthzService",
        "rpc.method": "CheckPermission",
        "rpc.grpc.status_code": 0,
        "rpc.status_code": "OK",
      });
    });

    it.skipIf(skip)(
      "gRPC: the database work of the call is in store.* spans, children of the server span",
      () => {
        const server = serverSpanOf(grpcCaller.traceId);
        const children = spans.filter((span) => span.traceId === grpcCaller.traceId && span.kind === CLIENT);
        expect(children.map((span) => span.name)).toContain("store.userRoles");
        for (const child of children) {
          expect(child.parentSpanId).toBe(server.spanId);
          expect(child.name).toMatch(/^store\.[a-zA-Z]+$/);
          expect(child.attributes).toMatchObject({
            "db.system": system,
            "db.system.name": system,
            "db.operation.name": child.name.slice("store.".length),
          });
          expect(child.status.code).toBe(0);
        }
        if (system === "postgresql") {
          expect(children[0]?.attributes).toMatchObject({
            "db.namespace": database?.name,
            "server.address": "127.0.0.1",
            "server.port": 5432,
          });
        }
      },
    );

    it.skipIf(skip)(
      "Connect: the server span continues the caller's trace; its store spans are its children",
      () => {
        const server = serverSpanOf(connectCaller.traceId);
        expect(server).toMatchObject({
          parentSpanId: connectCaller.spanId,
          name: "flip.authz.v1.AuthzService/CheckPermission",
          status: { code: 0 },
        });
        expect(server.attributes).toMatchObject({
          "rpc.system": "connect_rpc",
          "rpc.service": "flip.authz.v1.AuthzService",
          "rpc.method": "CheckPermission",
          "rpc.grpc.status_code": 0,
        });
        const children = spans.filter(
          (span) => span.traceId === connectCaller.traceId && span.kind === CLIENT,
        );
        expect(children.length).toBeGreaterThan(0);
        for (const child of children) {
          expect(child.parentSpanId).toBe(server.spanId);
          expect(child.attributes["db.system"]).toBe(system);
        }
      },
    );

    it.skipIf(skip)("a refused call's span has its code; a caller's mistake is not a server error", () => {
      const span = serverSpanOf(deniedCaller.traceId);
      expect(span.parentSpanId).toBe(deniedCaller.spanId);
      expect(span.attributes["rpc.grpc.status_code"]).toBe(grpc.status.UNAUTHENTICATED);
      expect(span.status.code).not.toBe(ERROR);
      expect(spans.filter((s) => s.traceId === deniedCaller.traceId && s.kind === CLIENT)).toEqual([]);
    });

    it.skipIf(skip)(
      "the route guard: Envoy's Check and /forward-auth continue the caller's trace too",
      () => {
        expect(serverSpanOf(envoyCaller.traceId)).toMatchObject({
          parentSpanId: envoyCaller.spanId,
          name: "envoy.service.auth.v3.Authorization/Check",
          attributes: { "rpc.system": "grpc", "rpc.method": "Check", "rpc.grpc.status_code": 0 },
        });
        expect(serverSpanOf(forwardCaller.traceId)).toMatchObject({
          parentSpanId: forwardCaller.spanId,
          name: "GET /forward-auth",
          attributes: {
            "http.request.method": "GET",
            "http.route": "/forward-auth",
            "http.response.status_code": 200,
          },
          status: { code: 0 },
        });
      },
    );

    it.skipIf(skip)("the log lines of a call carry its trace_id and span_id", () => {
      for (const caller of [grpcCaller, connectCaller, deniedCaller]) {
        const server = serverSpanOf(caller.traceId);
        const lines = logs.filter((line) => line.trace_id === caller.traceId);
        expect(lines.map((line) => line.msg)).toContain("call");
        for (const line of lines) expect(line.span_id).toBe(server.spanId);
      }
    });

    it.skipIf(skip)(
      "no store span outside a call: start-up, health pings and the change feed make no traces",
      () => {
        const callTraces = new Set(
          [grpcCaller, connectCaller, deniedCaller, envoyCaller, forwardCaller].map(
            (caller) => caller.traceId,
          ),
        );
        expect(spans.filter((span) => !callTraces.has(span.traceId))).toEqual([]);
      },
    );
  },
);

describe("a follower continues the caller's trace to its upstream", () => {
  let dir: string;
  let receiver: OtlpReceiver;
  let spans: ReceivedSpan[];
  let primaryLogs: Record<string, unknown>[];
  let primaryPort: number;
  const assigned = callerContext();
  const refused = callerContext();
  const REQUEST_ID = "follower-trace-request-1";

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "authz-tracing-follower-"));
    receiver = await startOtlpReceiver();
    const otel = { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint, OTEL_BSP_SCHEDULE_DELAY: "100" };
    // Open mode on both (loopback listeners): the caller sends no token, and the follower forwards none.
    const primary = await startServe(
      {
        ...otel,
        DATABASE_URL: `sqlite:${join(dir, "authz.db")}`,
        OTEL_SERVICE_NAME: "authz-primary",
        AUTHZ_ACCESS_LOG: "true",
      },
      { name: "tracing-primary" },
    );
    primaryPort = primary.grpcPort;
    const follower = await startServe(
      { ...otel, AUTHZ_UPSTREAM: primary.grpcTarget, OTEL_SERVICE_NAME: "authz-follower" },
      { name: "tracing-follower", ready: "flip-authz follower listening" },
    );
    await eventually(async () => (await readiness(follower.httpBase)) === "SERVING", 15_000);
    const client = new grpc.Client(follower.grpcTarget, grpc.credentials.createInsecure());
    const assign = (role: string, caller: { traceparent: string }) =>
      unary(
        client,
        methodPath(AuthzService.method.assignRole),
        toBinary(AssignRoleRequestSchema, create(AssignRoleRequestSchema, { userId: randomUUID(), role })),
        { traceparent: caller.traceparent, "x-request-id": REQUEST_ID },
      );
    const written = await assign("Researcher", assigned);
    expect(written.code).toBe(0);
    expect(fromBinary(AssignRoleResponseSchema, written.answer as Buffer)).toMatchObject({
      changed: true,
      roles: ["Researcher"],
    });
    expect((await assign("No Such Role", refused)).code).toBe(grpc.status.NOT_FOUND);
    client.close();
    expect(await follower.stop()).toBe(0);
    expect(await primary.stop()).toBe(0);
    spans = receiver.spans;
    primaryLogs = jsonLines(primary.logs);
  }, 90_000);

  afterAll(async () => {
    await stopAll();
    await receiver?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** The one span of this trace, service and kind. */
  const spanOf = (traceId: string, service: string, kind: number) => {
    const found = spans.filter(
      (span) => span.traceId === traceId && span.resource["service.name"] === service && span.kind === kind,
    );
    expect(found, `one span in ${service}, trace ${traceId}: ${JSON.stringify(spans, null, 1)}`).toHaveLength(
      1,
    );
    return found[0] as ReceivedSpan;
  };

  it("caller → follower's server span → its client span → the upstream's server span → its store spans", () => {
    const name = "flip.authz.v1.AuthzService/AssignRole";
    const followerServer = spanOf(assigned.traceId, "authz-follower", SERVER);
    expect(followerServer).toMatchObject({ name, parentSpanId: assigned.spanId });
    const followerClient = spanOf(assigned.traceId, "authz-follower", CLIENT);
    expect(followerClient).toMatchObject({ name, parentSpanId: followerServer.spanId, status: { code: 0 } });
    expect(followerClient.attributes).toMatchObject({
      "rpc.system": "grpc",
      "rpc.service": "flip.authz.v1.AuthzService",
      "rpc.method": "AssignRole",
      "rpc.grpc.status_code": 0,
      "server.address": "127.0.0.1",
      "server.port": primaryPort,
    });
    const primaryServer = spanOf(assigned.traceId, "authz-primary", SERVER);
    expect(primaryServer).toMatchObject({ name, parentSpanId: followerClient.spanId });
    const stores = spans.filter(
      (span) => span.traceId === assigned.traceId && span.resource["service.name"] === "authz-primary",
    );
    const storeSpans = stores.filter((span) => span.kind === CLIENT);
    expect(storeSpans.map((span) => span.name)).toContain("store.assignRole");
    for (const span of storeSpans) expect(span.parentSpanId).toBe(primaryServer.spanId);
  });

  it("a call the upstream refuses: the follower's client span is an error with the upstream's code", () => {
    const followerClient = spanOf(refused.traceId, "authz-follower", CLIENT);
    expect(followerClient.attributes["rpc.grpc.status_code"]).toBe(grpc.status.NOT_FOUND);
    expect(followerClient.status.code).toBe(ERROR);
    const primaryServer = spanOf(refused.traceId, "authz-primary", SERVER);
    expect(primaryServer.parentSpanId).toBe(followerClient.spanId);
    // On the server side a missing role is the caller's outcome, not a fault.
    expect(primaryServer.status.code).not.toBe(ERROR);
  });

  it("the upstream logs the forwarded call under the caller's request id", () => {
    const lines = primaryLogs.filter((line) => line.requestId === REQUEST_ID);
    expect(lines.map((line) => [line.msg, line.method, line.code])).toEqual([
      ["call", "flip.authz.v1.AuthzService/AssignRole", "OK"],
      ["call", "flip.authz.v1.AuthzService/AssignRole", "NOT_FOUND"],
    ]);
    expect(lines.map((line) => line.trace_id)).toEqual([assigned.traceId, refused.traceId]);
  });

  it("the follower's own work with the upstream (first sync, change stream) makes no span of its own", () => {
    const traces = new Set([assigned.traceId, refused.traceId]);
    const others = spans.filter((span) => !traces.has(span.traceId));
    expect(others.filter((span) => span.resource["service.name"] === "authz-follower")).toEqual([]);
    // The upstream traces those calls as it would any caller's: root server spans (its sampler decides).
    const names = new Set(others.filter((span) => span.kind === SERVER).map((span) => span.name));
    expect(names).toContain("flip.authz.v1.AuthzService/WatchChanges");
    for (const span of others.filter((other) => other.kind === SERVER)) expect(span.parentSpanId).toBe("");
  });
});

describe("starting with tracing misconfigured", () => {
  const dir = mkdtempSync(join(tmpdir(), "authz-tracing-config-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it.each([
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: "collector:4318" }, "OTEL_EXPORTER_OTLP_ENDPOINT"],
    [
      { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "ftp://collector/v1/traces" },
      "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ],
    [
      { OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318", OTEL_TRACES_SAMPLER: "sometimes" },
      "OTEL_TRACES_SAMPLER",
    ],
    [
      {
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318",
        OTEL_TRACES_SAMPLER: "parentbased_traceidratio",
        OTEL_TRACES_SAMPLER_ARG: "2",
      },
      "OTEL_TRACES_SAMPLER_ARG",
    ],
    [
      { OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318", OTEL_EXPORTER_OTLP_HEADERS: "api-key" },
      "OTEL_EXPORTER_OTLP_HEADERS",
    ],
    [
      { OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318", OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" },
      "OTEL_EXPORTER_OTLP_PROTOCOL",
    ],
  ])("%o stops the start naming %s", async (env, variable) => {
    const result = await runCli(["serve"], {
      DATABASE_URL: `sqlite:${join(dir, "authz.db")}`,
      AUTHZ_SERVICE_TOKENS: TOKEN,
      AUTHZ_GRPC_LISTEN: "127.0.0.1:0",
      AUTHZ_HTTP_LISTEN: "127.0.0.1:0",
      ...env,
    });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`${variable}: `);
    expect(result.stdout).not.toContain("listening");
  });
});

// prom-client loads @opentelemetry/api for its exemplars whether or not tracing is on (it did before tracing
// existed); what must stay out is everything of the SDK: tracer, exporter, resources, context manager.
describe("without an OTLP endpoint nothing of the OpenTelemetry SDK is loaded", () => {
  const dir = mkdtempSync(join(tmpdir(), "authz-tracing-off-"));
  // A module hook that names every @opentelemetry module the process loads, on stderr.
  const watch = fileURLToPath(new URL("./watch-modules.mjs", import.meta.url));
  let receiver: OtlpReceiver;

  beforeAll(async () => {
    receiver = await startOtlpReceiver();
  });
  afterEach(() => stopAll());
  afterAll(async () => {
    await receiver.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function modulesLoaded(env: Record<string, string>, label: string): Promise<string[]> {
    const serve = await startServe(
      {
        DATABASE_URL: `sqlite:${join(dir, `${label}.db`)}`,
        AUTHZ_SERVICE_TOKENS: TOKEN,
        NODE_OPTIONS: `--import=${watch}`,
        ...env,
      },
      { name: label },
    );
    const client = new grpc.Client(serve.grpcTarget, grpc.credentials.createInsecure());
    const caller = callerContext();
    expect(
      await check(client, randomUUID(), {
        authorization: `Bearer ${TOKEN}`,
        traceparent: caller.traceparent,
      }),
    ).toMatchObject({ code: 0 });
    client.close();
    expect(await serve.stop()).toBe(0);
    return serve.logs
      .filter((line) => line.startsWith("module-loaded ") && !line.includes("/@opentelemetry/api/"))
      .map((line) => line.slice("module-loaded ".length));
  }

  it("unset: a call is served and no @opentelemetry module but prom-client's api was loaded", async () => {
    expect(await modulesLoaded({}, "tracing-off")).toEqual([]);
    expect(receiver.requests).toEqual([]);
  });

  it("OTEL_SDK_DISABLED=true beside an endpoint: the same", async () => {
    const loaded = await modulesLoaded(
      { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint, OTEL_SDK_DISABLED: "true" },
      "tracing-disabled",
    );
    expect(loaded).toEqual([]);
    expect(receiver.requests).toEqual([]);
  });

  it("set: the watch does see the SDK load (the check above can fail)", async () => {
    const loaded = await modulesLoaded({ OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint }, "tracing-on");
    expect(loaded.some((url) => url.includes("/@opentelemetry/sdk-trace/"))).toBe(true);
    expect(receiver.requests.length).toBeGreaterThan(0);
  });
});
