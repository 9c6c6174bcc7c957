// Prometheus metrics for both listeners: Node's default process metrics (but GC durations), the RPCs of
// both listeners under go-grpc-prometheus's names (call-stats.ts: grpc_server_started_total,
// grpc_server_handled_total, grpc_server_msg_received_total, grpc_server_msg_sent_total,
// grpc_server_handling_seconds), and the route guard's decisions by route and result (ext_authz and forward
// auth alike), served as text on GET /metrics. The service's own metrics are named authz_….

import { createRequire } from "node:module";
import { Counter, Gauge, Registry } from "prom-client";
import type { Decision, DecisionKind } from "../guard/decide.ts";
import { registerCallStats } from "./call-stats.ts";
import type { CallHooks, CallRecord, GrpcType, Transport } from "./outcome.ts";

export interface RpcMetrics extends CallHooks {
  readonly registry: Registry;
  /** Counts one call's start; listeners call it through the CallHooks they are given. */
  start(transport: Transport, method: string, type: GrpcType): void;
  /** Records one finished call. */
  record(call: CallRecord): void;
  /** Counts one route decision: `authz_route_decisions_total{route, decision}`. */
  decision(decision: Decision): void;
}

export interface RpcMetricsOptions {
  /** Defaults to a fresh Registry (tests and several servers in one process do not collide). */
  registry?: Registry;
  /** Node process metrics (CPU, memory, event loop lag, heap; see DEFAULT_METRICS). Default true. */
  defaultMetrics?: boolean;
}

/**
 * grpc_server_handling_seconds bounds: go-grpc-prometheus's defaults (prometheus.DefBuckets, 5 ms to 10 s)
 * with three below them, where a cached check lies (well under a millisecond).
 */
export const HANDLING_BUCKETS = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
] as const;

/**
 * prom-client's default metrics (collectDefaultMetrics) but one: `nodejs_gc_duration_seconds`. Its
 * PerformanceObserver runs JavaScript after every garbage collection, and under the hot check's load (a
 * young-generation collection every few milliseconds) that cost 3-4% of the cached check's throughput
 * (measured in pairs, five rounds each: 1.027 and 1.042 with it off). The others cost nothing between
 * scrapes. prom-client has no option to leave one out, so its modules are registered one by one, as
 * collectDefaultMetrics does (prom-client is pinned to an exact version).
 */
const DEFAULT_METRICS = [
  "processCpuTotal",
  "processStartTime",
  "osMemoryHeap",
  "processOpenFileDescriptors",
  "processMaxFileDescriptors",
  "eventLoopLag",
  "processResources",
  "processHandles",
  "processRequests",
  "heapSizeAndUsed",
  "heapSpacesSizeAndUsed",
  "version",
] as const;

const require = createRequire(import.meta.url);

function registerDefaultMetrics(registry: Registry): void {
  for (const name of DEFAULT_METRICS) {
    const register = require(`prom-client/lib/metrics/${name}`) as (
      registry: Registry,
      config: { eventLoopMonitoringPrecision: number },
    ) => void;
    register(registry, { eventLoopMonitoringPrecision: 10 });
  }
}

const DECISION_KINDS = [
  "allow",
  "deny",
  "unauthenticated",
  "error",
] as const satisfies readonly DecisionKind[];
const DECISION_INDEX = Object.fromEntries(DECISION_KINDS.map((kind, i) => [kind, i])) as Record<
  DecisionKind,
  number
>;

export function createRpcMetrics(options: RpcMetricsOptions = {}): RpcMetrics {
  const registry = options.registry ?? new Registry();
  if (options.defaultMetrics ?? true) registerDefaultMetrics(registry);
  // Counted per call in typed arrays, turned into series when scraped (call-stats.ts).
  const calls = registerCallStats({ registry, buckets: HANDLING_BUCKETS });
  // Counted per decision in a typed array per route, turned into series when scraped: prom-client's inc()
  // validates and hashes its labels each time, which cost an allowed /forward-auth request ~2%.
  const decided = new Map<string, Float64Array>();
  new Counter({
    name: "authz_route_decisions_total",
    help: "Route guard decisions (ext_authz, /forward-auth, /ext-authz), by route path (or none) and decision (allow, deny, unauthenticated, error).",
    labelNames: ["route", "decision"] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const [route, counts] of decided) {
        DECISION_KINDS.forEach((kind, i) => {
          if ((counts[i] as number) > 0) this.inc({ route, decision: kind }, counts[i]);
        });
      }
    },
  });
  return {
    registry,
    decision(decision) {
      let counts = decided.get(decision.route);
      if (counts === undefined) {
        counts = new Float64Array(DECISION_KINDS.length);
        decided.set(decision.route, counts);
      }
      (counts[DECISION_INDEX[decision.kind]] as number)++;
    },
    start: (transport, method, type) => calls.start(transport, method, type),
    record: (call) => calls.record(call),
  };
}

/** `authz_serving`: 1 while the health status is SERVING (what /readyz and gRPC health say), else 0. */
export function registerServing(registry: Registry, health: { isServing(): boolean }): void {
  new Gauge({
    name: "authz_serving",
    help: "1 while the service reports SERVING (gRPC health, /readyz 200), else 0.",
    registers: [registry],
    collect() {
      this.set(health.isServing() ? 1 : 0);
    },
  });
}
