// Prometheus metrics for both listeners: Node's default process metrics, one counter and one latency
// histogram of RPCs by transport, method and status code, and the route guard's decisions by route and
// result (ext_authz and forward auth alike), served as text on GET /metrics.

import { Counter, collectDefaultMetrics, Registry } from "prom-client";
import type { Decision } from "../guard/decide.ts";
import { registerCallStats } from "./call-stats.ts";
import { type CallRecord, codeName } from "./outcome.ts";

export interface RpcMetrics {
  readonly registry: Registry;
  /** Records one finished call; pass as `onCallEnd` to both listeners. */
  record(call: CallRecord): void;
  /** Counts one route decision: `authz_route_decisions_total{route, decision}`. */
  decision(decision: Decision): void;
}

export interface RpcMetricsOptions {
  /** Defaults to a fresh Registry (tests and several servers in one process do not collide). */
  registry?: Registry;
  /** Node process metrics (CPU, memory, event loop lag, GC). Default true. */
  defaultMetrics?: boolean;
}

export function createRpcMetrics(options: RpcMetricsOptions = {}): RpcMetrics {
  const registry = options.registry ?? new Registry();
  if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: registry });
  // Counted per call in typed arrays, turned into series when scraped (call-stats.ts).
  const calls = registerCallStats({
    registry,
    counter: {
      name: "authz_rpc_handled_total",
      help: "RPCs completed, by transport (grpc, connect, grpc-web), method and gRPC status code.",
    },
    histogram: {
      name: "authz_rpc_duration_seconds",
      help: "RPC handling time in seconds, by transport, method and gRPC status code.",
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    },
    labels: (transport, method, code) => ({ transport, method, code: codeName(code) }),
  });
  const decisions = new Counter({
    name: "authz_route_decisions_total",
    help: "Route guard decisions (ext_authz, /forward-auth, /ext-authz), by route path (or none) and decision (allow, deny, unauthenticated, error).",
    labelNames: ["route", "decision"] as const,
    registers: [registry],
  });
  return {
    registry,
    decision(decision) {
      decisions.inc({ route: decision.route, decision: decision.kind });
    },
    record: (call) => calls.record(call),
  };
}
