// The RPC counter and latency histogram on /metrics: exact counts, cumulative buckets, sums and labels for
// the calls recorded, in Prometheus text as prom-client writes it.

import { describe, expect, it } from "vitest";
import { createRpcMetrics } from "../../src/server/metrics.ts";

const METHOD = "flip.authz.v1.AuthzService/CheckPermission";

function lines(text: string, prefix: string): string[] {
  return text.split("\n").filter((line) => line.startsWith(prefix));
}

describe("RPC metrics", () => {
  it("counts each call under its transport, method and code, with its duration in the right buckets", async () => {
    const metrics = createRpcMetrics({ defaultMetrics: false });
    metrics.record({ transport: "grpc", method: METHOD, code: 0, seconds: 0.0002 });
    metrics.record({ transport: "grpc", method: METHOD, code: 0, seconds: 0.003 });
    metrics.record({ transport: "grpc", method: METHOD, code: 5, seconds: 0.0005 });
    metrics.record({ transport: "connect", method: METHOD, code: 0, seconds: 42 });
    metrics.record({ transport: "grpc-web", method: METHOD, code: 99, seconds: 0.01 });
    const text = await metrics.registry.metrics();

    expect(text).toContain("# TYPE authz_rpc_handled_total counter");
    expect(text).toContain("# TYPE authz_rpc_duration_seconds histogram");
    expect(lines(text, "authz_rpc_handled_total{").sort()).toEqual(
      [
        `authz_rpc_handled_total{transport="grpc",method="${METHOD}",code="OK"} 2`,
        `authz_rpc_handled_total{transport="grpc",method="${METHOD}",code="NOT_FOUND"} 1`,
        `authz_rpc_handled_total{transport="connect",method="${METHOD}",code="OK"} 1`,
        `authz_rpc_handled_total{transport="grpc-web",method="${METHOD}",code="CODE_99"} 1`,
      ].sort(),
    );

    const ok = `transport="grpc",method="${METHOD}",code="OK"`;
    const bucket = (le: string, labels = ok) =>
      lines(text, `authz_rpc_duration_seconds_bucket{le="${le}",${labels}}`)[0]?.split(" ")[1];
    expect(bucket("0.0005")).toBe("1");
    expect(bucket("0.001")).toBe("1");
    expect(bucket("0.0025")).toBe("1");
    expect(bucket("0.005")).toBe("2");
    expect(bucket("10")).toBe("2");
    expect(bucket("+Inf")).toBe("2");
    // A duration on a bound counts in that bucket (le is "less than or equal").
    expect(bucket("0.0005", `transport="grpc",method="${METHOD}",code="NOT_FOUND"`)).toBe("1");
    // Past the last bound: only +Inf.
    const slow = `transport="connect",method="${METHOD}",code="OK"`;
    expect(bucket("10", slow)).toBe("0");
    expect(bucket("+Inf", slow)).toBe("1");
    expect(lines(text, `authz_rpc_duration_seconds_sum{${ok}}`)).toEqual([
      `authz_rpc_duration_seconds_sum{${ok}} 0.0032`,
    ]);
    expect(lines(text, `authz_rpc_duration_seconds_count{${slow}}`)).toEqual([
      `authz_rpc_duration_seconds_count{${slow}} 1`,
    ]);
  });

  it("starts again from zero when the registry is reset", async () => {
    const metrics = createRpcMetrics({ defaultMetrics: false });
    metrics.record({ transport: "grpc", method: METHOD, code: 0, seconds: 0.001 });
    metrics.registry.resetMetrics();
    expect(lines(await metrics.registry.metrics(), "authz_rpc_handled_total{")).toEqual([]);
    metrics.record({ transport: "grpc", method: METHOD, code: 0, seconds: 0.001 });
    expect(lines(await metrics.registry.metrics(), "authz_rpc_handled_total{")).toHaveLength(1);
  });
});
