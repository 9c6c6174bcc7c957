// The HTTP listener: Connect JSON over fetch with HTTP status mapping, gRPC-Web and Connect through real
// connect-node clients, the operator endpoints, and the request body limit.

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthzService } from "../../gen/flip/authz/v1/authz_pb.ts";
import { type Fixture, startFixture, unary } from "./fixture.ts";

describe("HTTP listener", () => {
  let f: Fixture;
  beforeAll(async () => {
    f = await startFixture({ maxBytes: 64 * 1024 });
  });
  afterAll(async () => {
    await f.close();
  });

  const post = (method: string, body: unknown, headers: Record<string, string> = {}) =>
    fetch(`${f.httpBase}/flip.authz.v1.AuthzService/${method}`, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: typeof body === "string" ? body : JSON.stringify(body),
    });

  it("answers Connect JSON over HTTP/1.1", async () => {
    const response = await post("ListRoles", {});
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({
      roles: [{ id: "r1", name: "Admin", description: "all", permissions: ["CAN_MANAGE_USERS"] }],
    });
    const check = await post(
      "CheckPermission",
      { userId: "u", permission: "P" },
      { authorization: "Bearer t" },
    );
    expect(await check.json()).toEqual({ allowed: true, grantedBy: ["P"], checkedAt: "Bearer t" });
  });

  it.each([
    [3, 400, "invalid_argument"],
    [5, 404, "not_found"],
    [7, 403, "permission_denied"],
    [9, 400, "failed_precondition"],
    [10, 409, "aborted"],
    [13, 500, "internal"],
    [14, 503, "unavailable"],
    [16, 401, "unauthenticated"],
  ])("maps ConnectError code %i to HTTP %i with the same message", async (code, status, name) => {
    const response = await post("CheckPermission", { userId: `code:${code}` });
    expect(response.status).toBe(status);
    expect(await response.json()).toEqual({ code: name, message: `failure ${code}: detail` });
  });

  it("answers a non-ConnectError with 500 internal 'internal error'", async () => {
    const response = await post("CheckPermission", { userId: "plain-error" });
    expect(response.status).toBe(500);
    const body = await response.text();
    expect(JSON.parse(body)).toEqual({ code: "internal", message: "internal error" });
    expect(body).not.toContain("secret");
  });

  it("refuses malformed JSON and an oversize body with a clean error", async () => {
    const bad = await post("CheckPermission", "{not json");
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { code: string }).code).toBe("invalid_argument");
    const big = await post("CheckPermission", { userId: "u", permission: "x".repeat(100_000) });
    expect(((await big.json()) as { code: string }).code).toBe("resource_exhausted");
    expect((await post("ListRoles", {})).status).toBe(200);
  });

  it("answers a body that is not protobuf with INVALID_ARGUMENT in every protocol, never INTERNAL", async () => {
    const garbage = Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff]);
    const envelope = Buffer.concat([Buffer.from([0, 0, 0, 0, garbage.length]), garbage]);
    const send = (method: string, contentType: string, body: Buffer) =>
      fetch(`${f.httpBase}/flip.authz.v1.AuthzService/${method}`, {
        method: "POST",
        headers: { "content-type": contentType },
        body,
      });
    const unaryAnswer = await send("CheckPermission", "application/proto", garbage);
    expect(unaryAnswer.status).toBe(400);
    expect(await unaryAnswer.json()).toEqual({
      code: "invalid_argument",
      message: "request message is malformed",
    });

    const grpcWeb = await send("CheckPermission", "application/grpc-web+proto", envelope);
    expect(grpcWeb.status).toBe(200);
    const trailer = Buffer.from(await grpcWeb.arrayBuffer());
    expect(trailer[0]).toBe(0x80);
    expect(trailer.subarray(5).toString()).toBe(
      "grpc-status: 3\r\ngrpc-message: request%20message%20is%20malformed\r\n",
    );

    const stream = await send("WatchChanges", "application/connect+proto", envelope);
    expect(stream.status).toBe(200);
    const end = Buffer.from(await stream.arrayBuffer());
    expect(end[0]).toBe(0x02);
    expect(JSON.parse(end.subarray(5).toString())).toEqual({
      error: { code: "invalid_argument", message: "request message is malformed" },
    });
    const metrics = await (await fetch(`${f.httpBase}/metrics`)).text();
    expect(metrics).toMatch(
      /grpc_server_handled_total\{grpc_type="unary",grpc_service="[^"]+",grpc_method="CheckPermission",transport="connect",grpc_code="InvalidArgument"\} [1-9]/,
    );
    expect(metrics).toMatch(
      /grpc_server_handled_total\{grpc_type="unary",grpc_service="[^"]+",grpc_method="CheckPermission",transport="grpc-web",grpc_code="InvalidArgument"\} [1-9]/,
    );
  });

  it("serves gRPC-Web and Connect to real connect-node clients, streaming included", async () => {
    for (const transport of [
      createGrpcWebTransport({ baseUrl: f.httpBase, httpVersion: "1.1" }),
      createConnectTransport({ baseUrl: f.httpBase, httpVersion: "1.1" }),
    ]) {
      const client = createClient(AuthzService, transport);
      const profile = await client.getProfile({ userId: "ABC" });
      expect(profile.profile?.createdAt?.seconds).toBe(BigInt(Date.parse("2026-01-02T03:04:05Z") / 1000));
      const revisions: string[] = [];
      for await (const change of client.watchChanges({ after: "count:5" })) revisions.push(change.revision);
      expect(revisions).toEqual(["0", "1", "2", "3", "4"]);
      const error = await client.checkPermission({ userId: "code:5" }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ConnectError);
      expect((error as ConnectError).code).toBe(Code.NotFound);
      expect((error as ConnectError).rawMessage).toBe("failure 5: detail");
    }
  });

  it("GET /healthz is alive; /readyz follows the health state", async () => {
    expect((await fetch(`${f.httpBase}/healthz`)).status).toBe(200);
    expect((await fetch(`${f.httpBase}/readyz`)).status).toBe(200);
    f.health.set("", "NOT_SERVING");
    expect((await fetch(`${f.httpBase}/readyz`)).status).toBe(503);
    expect((await fetch(`${f.httpBase}/healthz`)).status).toBe(200);
    f.health.setAll("SERVING");
  });

  it("GET /metrics has default metrics and RPC counts and latencies from both listeners", async () => {
    await unary(f.client, AuthzService.method.listRoles, {});
    await post("ListRoles", {});
    await post("CheckPermission", { userId: "code:5" });
    const response = await fetch(`${f.httpBase}/metrics`);
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toContain("text/plain");
    const text = await response.text();
    expect(text).toContain("process_cpu_user_seconds_total");
    const listRoles = (transport: string) =>
      `grpc_type="unary",grpc_service="flip.authz.v1.AuthzService",grpc_method="ListRoles",transport="${transport}"`;
    for (const transport of ["grpc", "connect"]) {
      expect(text).toMatch(new RegExp(`^grpc_server_started_total\\{${listRoles(transport)}\\} [1-9]`, "m"));
      expect(text).toMatch(
        new RegExp(`^grpc_server_handled_total\\{${listRoles(transport)},grpc_code="OK"\\} [1-9]`, "m"),
      );
      expect(text).toMatch(
        new RegExp(`^grpc_server_msg_received_total\\{${listRoles(transport)}\\} [1-9]`, "m"),
      );
      expect(text).toMatch(new RegExp(`^grpc_server_msg_sent_total\\{${listRoles(transport)}\\} [1-9]`, "m"));
    }
    expect(text).toMatch(
      /grpc_server_handled_total\{grpc_type="unary",grpc_service="[^"]+",grpc_method="CheckPermission",transport="connect",grpc_code="NotFound"\}/,
    );
    expect(text).toContain(`grpc_server_handling_seconds_bucket{le="0.005",${listRoles("grpc")}}`);
    expect(text).not.toContain("authz_rpc_");
  });

  it("answers 404 for an unknown path", async () => {
    expect((await fetch(`${f.httpBase}/nope`)).status).toBe(404);
  });
});
