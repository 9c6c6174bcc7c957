// The grpc-js listener as a real @grpc/grpc-js client sees it: answers, status codes and messages,
// streaming with cancellation and backpressure, deadlines, malformed and oversize requests, interceptors.

import http2 from "node:http2";
import {
  Code,
  ConnectError,
  createContextKey,
  createContextValues,
  type Interceptor,
} from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthzService } from "../../gen/flip/authz/v1/authz_pb.ts";
import { Health, HealthCheckResponse_ServingStatus } from "../../gen/grpc/health/v1/health_pb.ts";
import { methodPath } from "../../src/rpc/method-name.ts";
import { collect, type Fixture, rawUnary, serverStream, startFixture, unary, until } from "./fixture.ts";

const m = AuthzService.method;

describe("gRPC listener (grpc-js)", () => {
  let f: Fixture;
  beforeAll(async () => {
    f = await startFixture({ maxBytes: 64 * 1024 });
  });
  afterAll(async () => {
    await f.close();
  });

  it("answers a unary call and hands the authorization metadata to the handler", async () => {
    const answer = await unary(
      f.client,
      m.checkPermission,
      { userId: "u", permission: "CAN_X" },
      {
        metadata: { authorization: "Bearer abc.def" },
      },
    );
    expect(answer.allowed).toBe(true);
    expect(answer.grantedBy).toEqual(["CAN_X"]);
    expect(answer.checkedAt).toBe("Bearer abc.def");
  });

  it.each(Array.from({ length: 16 }, (_, i) => i + 1))(
    "a ConnectError with code %i arrives as the same gRPC status with the same message",
    async (code) => {
      const error = await unary(f.client, m.checkPermission, { userId: `code:${code}` }).catch((e) => e);
      expect(error.code).toBe(code);
      expect(error.details).toBe(`failure ${code}: detail`);
    },
  );

  it("cuts a huge message short instead of breaking the client's connection", async () => {
    const error = await unary(f.client, m.checkPermission, { userId: "long:100000" }).catch((e) => e);
    expect(error.code).toBe(grpc.status.NOT_FOUND);
    expect(error.details).toBe(`${"x".repeat(2047)}…`);
    // The same client (and its HTTP/2 session) still works.
    expect((await unary(f.client, m.checkPermission, { userId: "u", permission: "P" })).allowed).toBe(true);
  });

  it("answers INTERNAL 'internal error' for a non-ConnectError and logs the cause, not the client", async () => {
    const error = await unary(f.client, m.checkPermission, { userId: "plain-error" }).catch((e) => e);
    expect(error.code).toBe(grpc.status.INTERNAL);
    expect(error.details).toBe("internal error");
    expect(JSON.stringify(error.metadata.toJSON())).not.toContain("secret");
    const logged = f.logs.find((entry) => entry.level === "error");
    expect(String((logged?.obj as { err?: Error } | undefined)?.err?.message)).toContain("secret");
  });

  it("answers UNIMPLEMENTED for a method the implementation leaves out", async () => {
    const error = await unary(f.client, m.listAuditEvents, {}).catch((e) => e);
    expect(error.code).toBe(grpc.status.UNIMPLEMENTED);
    expect(error.details).toBe("flip.authz.v1.AuthzService.ListAuditEvents is not implemented");
  });

  it("answers INVALID_ARGUMENT for a malformed request body and keeps serving", async () => {
    const garbage = Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    const error = await rawUnary(f.client, methodPath(m.checkPermission), garbage).catch((e) => e);
    expect(error.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(error.details).toBe("request message is malformed");
    const streamError = await collect(
      f.client.makeServerStreamRequest(
        methodPath(m.watchChanges),
        (v: Buffer) => v,
        (v: Buffer) => v,
        Buffer.from([0x0f]),
      ),
    );
    expect(streamError.error?.code).toBe(grpc.status.INVALID_ARGUMENT);
    const answer = await unary(f.client, m.checkPermission, { userId: "u", permission: "p" });
    expect(answer.allowed).toBe(true);
  });

  it("answers RESOURCE_EXHAUSTED for a request over the size limit and keeps serving", async () => {
    const error = await unary(f.client, m.checkPermission, {
      userId: "u",
      permission: "x".repeat(100_000),
    }).catch((e) => e);
    expect(error.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect((await unary(f.client, m.listRoles, {})).roles[0]?.name).toBe("Admin");
  });

  it("passes the deadline as timeoutMs and aborts the signal when it passes", async () => {
    f.probe.aborted.length = 0;
    f.probe.timeouts.length = 0;
    const error = await unary(
      f.client,
      m.checkPermission,
      { userId: "sleep:5000" },
      { deadlineMs: 200 },
    ).catch((e) => e);
    expect(error.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    const timeout = f.probe.timeouts[0];
    expect(timeout).toBeGreaterThan(0);
    expect(timeout).toBeLessThanOrEqual(200);
    await until(() => f.probe.aborted.length === 1);
  });

  it("aborts the handler's signal when the client cancels a unary call", async () => {
    f.probe.aborted.length = 0;
    const call = f.client.makeUnaryRequest(
      methodPath(m.checkPermission),
      (v: Buffer) => v,
      (v: Buffer) => v,
      Buffer.from([0x0a, 0x0a, ...Buffer.from("sleep:5000")]),
      () => {},
    );
    await new Promise((resolve) => setTimeout(resolve, 100));
    call.cancel();
    await until(() => f.probe.aborted.length === 1);
  });

  it("streams server-streaming answers in order and ends with OK", async () => {
    const { messages, error } = await collect(serverStream(f.client, m.watchChanges, { after: "count:50" }));
    expect(error).toBeUndefined();
    expect(messages.map((message) => message.revision)).toEqual(
      Array.from({ length: 50 }, (_, i) => String(i)),
    );
    expect(messages[3]?.userId).toBe("u3");
  });

  it("ends a stream with the handler's ConnectError after the messages already sent", async () => {
    const { messages, error } = await collect(serverStream(f.client, m.watchChanges, { after: "fail:3" }));
    expect(messages).toHaveLength(3);
    expect(error?.code).toBe(grpc.status.NOT_FOUND);
    expect(error?.details).toBe("no such revision");
  });

  it("stops producing while the client does not read (HTTP/2 flow control), then stops on RST_STREAM", async () => {
    // The grpc-js client reads on even when paused, so a raw HTTP/2 client plays the slow reader.
    const before = f.probe.streamFinished;
    f.probe.streamYielded = 0;
    const session = http2.connect(`http://${f.grpcTarget}`);
    const message = Buffer.from([0x0a, 7, ...Buffer.from("endless")]);
    const request = session.request({
      ":method": "POST",
      ":path": methodPath(m.watchChanges),
      "content-type": "application/grpc",
      te: "trailers",
    });
    request.end(Buffer.concat([Buffer.from([0, 0, 0, 0, message.length]), message]));
    request.pause();
    await new Promise((resolve) => setTimeout(resolve, 300));
    const produced = f.probe.streamYielded;
    expect(produced).toBeGreaterThan(0);
    expect(produced).toBeLessThan(1000); // ~64 KiB window of 1 KiB messages plus a small write buffer
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(f.probe.streamYielded).toBe(produced);
    request.close(http2.constants.NGHTTP2_CANCEL);
    await until(() => f.probe.streamFinished === before + 1);
    session.close();
  });

  it("stops an endless generator when the grpc-js client cancels", async () => {
    const before = f.probe.streamFinished;
    const stream = serverStream(f.client, m.watchChanges, { after: "endless" });
    const ended = collect(stream);
    await new Promise<void>((resolve) => stream.once("data", () => resolve()));
    stream.cancel();
    expect((await ended).error?.code).toBe(grpc.status.CANCELLED);
    await until(() => f.probe.streamFinished === before + 1);
  });

  it("stops a generator that ignores the signal at its next yield after a cancel", async () => {
    const before = f.probe.streamFinished;
    const stream = serverStream(f.client, m.watchChanges, { after: "ignore-signal" });
    stream.on("error", () => {});
    await new Promise<void>((resolve) => stream.once("data", () => resolve()));
    stream.cancel();
    await until(() => f.probe.streamFinished === before + 1);
  });
});

describe("gRPC listener with interceptors", () => {
  let f: Fixture;
  const seen: string[] = [];
  const peers: string[] = [];
  const peerKey = createContextKey("", { description: "peer address" });
  const auth: Interceptor = (next) => async (request) => {
    seen.push(`${request.method.name}:${request.header.get("authorization") ?? "-"}`);
    peers.push(request.contextValues.get(peerKey));
    if (request.header.get("authorization") !== "Bearer good") {
      throw new ConnectError("credentials missing", Code.Unauthenticated);
    }
    return next(request);
  };
  beforeAll(async () => {
    f = await startFixture({
      interceptors: [auth],
      grpcContextValues: (call) => createContextValues().set(peerKey, call.getPeer()),
    });
  });
  afterAll(async () => {
    await f.close();
  });

  it("runs Connect interceptors on unary and streaming calls with the request metadata", async () => {
    const denied = await unary(f.client, m.listRoles, {}).catch((e) => e);
    expect(denied.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(denied.details).toBe("credentials missing");
    const roles = await unary(f.client, m.listRoles, {}, { metadata: { authorization: "Bearer good" } });
    expect(roles.roles).toHaveLength(1);
    const streamed = await collect(
      serverStream(
        f.client,
        m.watchChanges,
        { after: "count:2" },
        { metadata: { authorization: "Bearer good" } },
      ),
    );
    expect(streamed.messages).toHaveLength(2);
    const refused = await collect(serverStream(f.client, m.watchChanges, { after: "count:2" }));
    expect(refused.error?.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(seen).toEqual([
      "ListRoles:-",
      "ListRoles:Bearer good",
      "WatchChanges:Bearer good",
      "WatchChanges:-",
    ]);
  });

  it("does not run them for health checks", async () => {
    const count = seen.length;
    const answer = await unary(f.client, Health.method.check, { service: "" });
    expect(answer.status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    expect(seen.length).toBe(count);
  });
});
