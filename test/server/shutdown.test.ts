// Graceful shutdown over real sockets: NOT_SERVING first, in-flight calls finish, streams end UNAVAILABLE,
// new connections are refused, and the grace period bounds how long anything can hold the process.

import { Code, type ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { AuthzService } from "../../gen/flip/authz/v1/authz_pb.ts";
import {
  Health,
  HealthCheckResponse_ServingStatus as HealthStatus,
} from "../../gen/grpc/health/v1/health_pb.ts";
import { collect, serverStream, startFixture, unary, until } from "./fixture.ts";

const m = AuthzService.method;

describe("shutdown", () => {
  it("lets in-flight calls on both listeners finish, ends streams with UNAVAILABLE, then refuses", async () => {
    const f = await startFixture();
    const http = createClient(
      AuthzService,
      createConnectTransport({ baseUrl: f.httpBase, httpVersion: "1.1" }),
    );
    await http.listRoles({}); // a keep-alive connection that must not hold the close
    const stream = serverStream(f.client, m.watchChanges, { after: "endless" });
    const streamed = collect(stream);
    await new Promise<void>((resolve) => stream.once("data", () => resolve()));

    const watched: number[] = [];
    const watch = serverStream(f.client, Health.method.watch, { service: "" });
    watch.on("data", (message: { status: number }) => watched.push(message.status));
    const watchEnded = collect(watch);
    await until(() => watched.length === 1);

    const httpStream = (async () => {
      let received = 0;
      try {
        for await (const _ of http.watchChanges({ after: "endless" })) received++;
        return { received, error: undefined };
      } catch (error) {
        return { received, error: error as ConnectError };
      }
    })();

    const slowGrpc = unary(f.client, m.updateProfile, { userId: "g", name: "n" });
    const slowHttp = http.updateProfile({ userId: "h", name: "n" });
    // Both slow calls, and both streams, are in their handlers before the drain starts.
    await until(() => f.probe.startedSlow === 2 && f.probe.streamYielded > 0);
    const started = Date.now();
    const stopped = f.servers.shutdown(5000);
    expect(f.health.isServing()).toBe(false);

    expect((await slowGrpc).profile?.userId).toBe("g");
    expect((await slowHttp).profile?.userId).toBe("h");
    const { error } = await streamed;
    expect(error?.code).toBe(grpc.status.UNAVAILABLE);
    expect(error?.details).toBe("the server is shutting down");
    const httpStreamEnd = await httpStream;
    expect(httpStreamEnd.received).toBeGreaterThan(0);
    expect(httpStreamEnd.error?.code).toBe(Code.Unavailable);
    await stopped;
    // Health watchers learn NOT_SERVING before their stream ends.
    expect(watched).toEqual([HealthStatus.SERVING, HealthStatus.NOT_SERVING]);
    expect((await watchEnded).error?.code).toBe(grpc.status.UNAVAILABLE);
    expect(Date.now() - started).toBeLessThan(2000);
    expect(f.probe.completedSlow).toBe(2);
    await until(() => f.probe.streamFinished === 2);

    const refused = await fetch(`${f.httpBase}/healthz`).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(Error);
    const late = new grpc.Client(f.grpcTarget, grpc.credentials.createInsecure());
    const lateError = await unary(late, m.listRoles, {}, { deadlineMs: 500 }).catch((e) => e);
    expect([grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED]).toContain(lateError.code);
    late.close();
    f.client.close();
  });

  it("force-closes calls still running when the grace period ends", async () => {
    const f = await startFixture();
    const stuck = unary(f.client, m.checkPermission, { userId: "sleep:10000" }).catch((e) => e);
    const stuckHttp = fetch(`${f.httpBase}/flip.authz.v1.AuthzService/CheckPermission`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ userId: "sleep:10000" }),
    }).then(
      (response) => response.status,
      (e: unknown) => e,
    );
    // Both calls are in their handlers (each records its deadline there) before the drain starts.
    await until(() => f.probe.timeouts.length >= 2);
    const started = Date.now();
    await f.servers.shutdown(200);
    expect(Date.now() - started).toBeLessThan(1500);
    const stuckError = await stuck;
    expect([grpc.status.CANCELLED, grpc.status.UNAVAILABLE]).toContain(stuckError.code);
    // The HTTP call is cut off: its connection is closed under it, no answer at all.
    const httpOutcome = await stuckHttp;
    expect(httpOutcome).toBeInstanceOf(Error);
    expect(String((httpOutcome as Error & { cause?: unknown }).cause)).toContain("other side closed");
    expect(f.logs.some((entry) => entry.level === "warn" && entry.msg?.includes("grace period"))).toBe(true);
    f.client.close();
  });
});
