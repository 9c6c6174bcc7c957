// grpc.health.v1.Health over a real grpc-js client: Check, List and Watch follow the HealthState.

import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthzService } from "../../gen/flip/authz/v1/authz_pb.ts";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../../gen/grpc/health/v1/health_pb.ts";
import { createHealthState } from "../../src/server/health.ts";
import { type Fixture, serverStream, startFixture, unary, until } from "./fixture.ts";

const h = Health.method;
const SERVICE = AuthzService.typeName;

describe("HealthState", () => {
  it("starts NOT_SERVING, knows only its services and wakes waiters on change", async () => {
    const state = createHealthState([SERVICE]);
    expect(state.services()).toEqual(["", SERVICE]);
    expect(state.isServing()).toBe(false);
    expect(state.get("other")).toBeUndefined();
    expect(() => state.set("other", "SERVING")).toThrow(/unknown service/);
    const version = state.version;
    const woken = state.changed(version, new AbortController().signal);
    state.set(SERVICE, "SERVING");
    expect(await woken).toBe(true);
    const aborted = new AbortController();
    const waiting = state.changed(state.version, aborted.signal);
    aborted.abort();
    expect(await waiting).toBe(false);
  });
});

describe("grpc.health.v1.Health", () => {
  let f: Fixture;
  beforeAll(async () => {
    f = await startFixture({ serving: false });
  });
  afterAll(async () => {
    await f.close();
  });

  it("Check answers the overall and the service's status, NOT_FOUND for an unknown service", async () => {
    expect((await unary(f.client, h.check, { service: "" })).status).toBe(Status.NOT_SERVING);
    f.health.setAll("SERVING");
    expect((await unary(f.client, h.check, { service: "" })).status).toBe(Status.SERVING);
    expect((await unary(f.client, h.check, { service: SERVICE })).status).toBe(Status.SERVING);
    const error = await unary(f.client, h.check, { service: "nope.Service" }).catch((e) => e);
    expect(error.code).toBe(grpc.status.NOT_FOUND);
  });

  it("List answers every known service", async () => {
    f.health.setAll("SERVING");
    f.health.set(SERVICE, "NOT_SERVING");
    const answer = await unary(f.client, h.list, {});
    expect(Object.fromEntries(Object.entries(answer.statuses).map(([k, v]) => [k, v.status]))).toEqual({
      "": Status.SERVING,
      [SERVICE]: Status.NOT_SERVING,
    });
  });

  it("Watch sends the current status, then every change; SERVICE_UNKNOWN for an unknown service", async () => {
    f.health.setAll("NOT_SERVING");
    const seen: number[] = [];
    const stream = serverStream(f.client, h.watch, { service: SERVICE });
    stream.on("data", (message: { status: number }) => seen.push(message.status));
    stream.on("error", () => {});
    await until(() => seen.length === 1);
    f.health.set(SERVICE, "SERVING");
    await until(() => seen.length === 2);
    f.health.set("", "SERVING"); // another service: no message
    f.health.set(SERVICE, "NOT_SERVING");
    await until(() => seen.length === 3);
    expect(seen).toEqual([Status.NOT_SERVING, Status.SERVING, Status.NOT_SERVING]);
    stream.cancel();

    const unknown: number[] = [];
    const other = serverStream(f.client, h.watch, { service: "nope.Service" });
    other.on("data", (message: { status: number }) => unknown.push(message.status));
    other.on("error", () => {});
    await until(() => unknown.length === 1);
    expect(unknown).toEqual([Status.SERVICE_UNKNOWN]);
    other.cancel();
  });
});
