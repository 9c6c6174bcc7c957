// The RPC metrics on /metrics under go-grpc-prometheus's names: exact counts, cumulative buckets, sums and
// labels for the calls recorded, in Prometheus text as prom-client writes it.

import { Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { registerFeedLag } from "../../src/server/cache-metrics.ts";
import { createRpcMetrics, registerServing } from "../../src/server/metrics.ts";
import type { CallRecord } from "../../src/server/outcome.ts";

const SERVICE = "flip.authz.v1.AuthzService";
const METHOD = `${SERVICE}/CheckPermission`;

function lines(text: string, prefix: string): string[] {
  return text.split("\n").filter((line) => line.startsWith(prefix));
}

function call(fields: Partial<CallRecord>): CallRecord {
  return {
    transport: "grpc",
    method: METHOD,
    type: "unary",
    code: 0,
    seconds: 0,
    received: 1,
    sent: 1,
    peer: { getPeer: () => "127.0.0.1:1" },
    requestId: { id: "r" },
    ...fields,
  };
}

const labels = (transport: string, type = "unary", method = "CheckPermission", service = SERVICE) =>
  `grpc_type="${type}",grpc_service="${service}",grpc_method="${method}",transport="${transport}"`;

describe("Node's default metrics", () => {
  it("are prom-client's defaults but the GC durations, whose per-collection observer costs the hot path", async () => {
    const ours = new Registry();
    createRpcMetrics({ registry: ours });
    const names = (registry: Registry) =>
      registry
        .getMetricsAsArray()
        .map((metric) => metric.name)
        .filter((name) => name.startsWith("process_") || name.startsWith("nodejs_"))
        .sort();
    const theirs = new Registry();
    const { collectDefaultMetrics } = await import("prom-client");
    collectDefaultMetrics({ register: theirs });
    expect(names(ours)).toEqual(names(theirs).filter((name) => name !== "nodejs_gc_duration_seconds"));
    expect(names(ours)).toEqual(
      expect.arrayContaining([
        "process_cpu_user_seconds_total",
        "nodejs_eventloop_lag_p99_seconds",
        "nodejs_heap_space_size_used_bytes",
        "process_resident_memory_bytes",
      ]),
    );
    const text = await ours.metrics();
    expect(text).toMatch(/^process_cpu_user_seconds_total \d/m);
    expect(text).toMatch(/^nodejs_eventloop_lag_p99_seconds \d/m);
    expect(text).not.toContain("nodejs_gc_duration_seconds");
  });
});

describe("RPC metrics", () => {
  it("counts each call under go-grpc-prometheus's names and labels, with its duration in the right buckets", async () => {
    const metrics = createRpcMetrics({ defaultMetrics: false });
    for (let i = 0; i < 4; i++) metrics.start("grpc", METHOD, "unary");
    metrics.start("connect", METHOD, "unary");
    metrics.record(call({ seconds: 0.0002 }));
    metrics.record(call({ seconds: 0.003 }));
    metrics.record(call({ code: 5, seconds: 0.0005, sent: 0 }));
    metrics.record(call({ transport: "connect", seconds: 42 }));
    metrics.record(call({ transport: "grpc-web", code: 99, seconds: 0.01, sent: 0 }));
    metrics.start("grpc", `${SERVICE}/WatchChanges`, "server_stream");
    metrics.record(call({ method: `${SERVICE}/WatchChanges`, type: "server_stream", sent: 7, seconds: 1 }));
    const text = await metrics.registry.metrics();

    for (const name of [
      "grpc_server_started_total",
      "grpc_server_handled_total",
      "grpc_server_msg_received_total",
      "grpc_server_msg_sent_total",
    ]) {
      expect(text).toContain(`# TYPE ${name} counter`);
    }
    expect(text).toContain("# TYPE grpc_server_handling_seconds histogram");
    expect(lines(text, "grpc_server_handled_total{").sort()).toEqual(
      [
        `grpc_server_handled_total{${labels("grpc")},grpc_code="OK"} 2`,
        `grpc_server_handled_total{${labels("grpc")},grpc_code="NotFound"} 1`,
        `grpc_server_handled_total{${labels("connect")},grpc_code="OK"} 1`,
        `grpc_server_handled_total{${labels("grpc-web")},grpc_code="Code(99)"} 1`,
        `grpc_server_handled_total{${labels("grpc", "server_stream", "WatchChanges")},grpc_code="OK"} 1`,
      ].sort(),
    );
    // A call still running is started but not handled; a call recorded without a start (a malformed one
    // reported by its listener) has a series all the same.
    expect(lines(text, "grpc_server_started_total{").sort()).toEqual(
      [
        `grpc_server_started_total{${labels("grpc")}} 4`,
        `grpc_server_started_total{${labels("connect")}} 1`,
        `grpc_server_started_total{${labels("grpc-web")}} 0`,
        `grpc_server_started_total{${labels("grpc", "server_stream", "WatchChanges")}} 1`,
      ].sort(),
    );
    expect(lines(text, `grpc_server_msg_received_total{${labels("grpc")}}`)).toEqual([
      `grpc_server_msg_received_total{${labels("grpc")}} 3`,
    ]);
    expect(lines(text, `grpc_server_msg_sent_total{${labels("grpc")}}`)).toEqual([
      `grpc_server_msg_sent_total{${labels("grpc")}} 2`,
    ]);
    expect(
      lines(text, `grpc_server_msg_sent_total{${labels("grpc", "server_stream", "WatchChanges")}}`),
    ).toEqual([`grpc_server_msg_sent_total{${labels("grpc", "server_stream", "WatchChanges")}} 7`]);

    // The histogram has no grpc_code, as in go-grpc-prometheus: the three grpc calls are in one series.
    const bucket = (le: string, set = labels("grpc")) =>
      lines(text, `grpc_server_handling_seconds_bucket{le="${le}",${set}}`)[0]?.split(" ")[1];
    expect(bucket("0.00025")).toBeUndefined();
    // 0.0002 and 0.0005 (a duration on a bound counts in that bucket: le is "less than or equal").
    expect(bucket("0.0005")).toBe("2");
    expect(bucket("0.001")).toBe("2");
    expect(bucket("0.005")).toBe("3");
    expect(bucket("10")).toBe("3");
    expect(bucket("+Inf")).toBe("3");
    // Past the last bound: only +Inf.
    expect(bucket("10", labels("connect"))).toBe("0");
    expect(bucket("+Inf", labels("connect"))).toBe("1");
    expect(lines(text, `grpc_server_handling_seconds_sum{${labels("grpc")}}`)).toEqual([
      `grpc_server_handling_seconds_sum{${labels("grpc")}} 0.0037`,
    ]);
    expect(lines(text, `grpc_server_handling_seconds_count{${labels("connect")}}`)).toEqual([
      `grpc_server_handling_seconds_count{${labels("connect")}} 1`,
    ]);
    expect(text).not.toContain("authz_rpc_");
  });

  it("starts again from zero when the registry is reset", async () => {
    const metrics = createRpcMetrics({ defaultMetrics: false });
    metrics.record(call({ seconds: 0.001 }));
    metrics.registry.resetMetrics();
    expect(lines(await metrics.registry.metrics(), "grpc_server_handled_total{")).toEqual([]);
    metrics.record(call({ seconds: 0.001 }));
    expect(lines(await metrics.registry.metrics(), "grpc_server_handled_total{")).toHaveLength(1);
  });
});

describe("change feed lag", () => {
  const value = (text: string, name: string) => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1]);

  it("is how far and how long the caches are behind the database's revision as last read", async () => {
    const registry = new Registry();
    const source = {
      stats: { hits: 0, misses: 0, databaseReads: 0, catalogReloads: 0 },
      live: true,
      appliedRevision: 10,
      cachedUsers: 0,
    };
    const lag = registerFeedLag(registry, source);
    lag.observe(10);
    let text = await registry.metrics();
    expect(value(text, "authz_database_revision")).toBe(10);
    expect(value(text, "authz_change_feed_lag_revisions")).toBe(0);
    expect(value(text, "authz_change_feed_lag_seconds")).toBe(0);

    // Behind since 30 s ago (revision 12 read then), and still behind a later reading.
    lag.observe(12, Date.now() - 30_000);
    lag.observe(15, Date.now() - 5_000);
    text = await registry.metrics();
    expect(value(text, "authz_change_feed_lag_revisions")).toBe(5);
    expect(value(text, "authz_change_feed_lag_seconds")).toBeGreaterThanOrEqual(30);
    expect(value(text, "authz_change_feed_lag_seconds")).toBeLessThan(31);

    // 12 applied: the lag is counted from the reading of 15 on.
    source.appliedRevision = 12;
    text = await registry.metrics();
    expect(value(text, "authz_change_feed_lag_revisions")).toBe(3);
    expect(value(text, "authz_change_feed_lag_seconds")).toBeGreaterThanOrEqual(5);
    expect(value(text, "authz_change_feed_lag_seconds")).toBeLessThan(6);

    source.appliedRevision = 15;
    text = await registry.metrics();
    expect(value(text, "authz_change_feed_lag_revisions")).toBe(0);
    expect(value(text, "authz_change_feed_lag_seconds")).toBe(0);
  });

  it("authz_serving follows the health state", async () => {
    const registry = new Registry();
    let serving = false;
    registerServing(registry, { isServing: () => serving });
    expect(value(await registry.metrics(), "authz_serving")).toBe(0);
    serving = true;
    expect(value(await registry.metrics(), "authz_serving")).toBe(1);
  });
});
