// Prometheus metrics for both listeners: Node's default process metrics, one counter and one latency
// histogram of RPCs by transport, method and status code, and the route guard's decisions by route and
// result (ext_authz and forward auth alike), served as text on GET /metrics.

import { Counter, collectDefaultMetrics, Histogram, Registry } from "prom-client";
import type { Decision } from "../guard/decide.ts";
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
  const labelNames = ["transport", "method", "code"] as const;
  const handled = new Counter({
    name: "authz_rpc_handled_total",
    help: "RPCs completed, by transport (grpc, connect, grpc-web), method and gRPC status code.",
    labelNames,
    registers: [registry],
  });
  const duration = new Histogram({
    name: "authz_rpc_duration_seconds",
    help: "RPC handling time in seconds, by transport, method and gRPC status code.",
    labelNames,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
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
    record(call) {
      const labels = { transport: call.transport, method: call.method, code: codeName(call.code) };
      handled.inc(labels);
      duration.observe(labels, call.seconds);
    },
  };
}
