// Per-call RPC statistics under go-grpc-prometheus's names (grpc_server_started_total, _handled_total,
// _msg_received_total, _msg_sent_total and the grpc_server_handling_seconds histogram), kept in plain
// numbers and typed arrays and turned into Prometheus series only when /metrics is scraped. Recording a
// call is a Map lookup and a few increments; prom-client's own inc()/observe() re-validate and re-hash the
// label set on every call, which cost more than a cached check itself.
//
// Labels are go-grpc-prometheus's (grpc_type, grpc_service, grpc_method, and grpc_code on the handled
// counter; the histogram has no code, as there) plus `transport` (grpc, connect, grpc-web): the HTTP
// listener's protocols are worth telling apart, and dashboards built for go-grpc-prometheus aggregate with
// sum by (grpc_…), which sums an extra label away.

import type { Registry } from "prom-client";
import type { CallRecord, GrpcType, Transport } from "./outcome.ts";

export interface CallStatsOptions {
  registry: Registry;
  /** Histogram bounds in seconds. */
  buckets: readonly number[];
}

export interface CallStats {
  /** A call began (grpc_server_started_total). */
  start(transport: Transport, method: string, type: GrpcType): void;
  /** A call ended: its code, duration and messages. */
  record(call: CallRecord): void;
}

/** One method on one transport. */
interface Series {
  readonly labels: Readonly<Record<string, string>>;
  started: number;
  received: number;
  sent: number;
  sum: number;
  count: number;
  /** Calls per bucket, not cumulative: index i counts durations in (bound[i-1], bound[i]]. */
  readonly buckets: Float64Array;
  /** Calls handled, indexed by status code. */
  readonly codes: number[];
}

interface PromValue {
  labels: Record<string, string | number>;
  value: number;
  metricName?: string;
}

const LABELS = "grpc_type, grpc_service, grpc_method and transport (grpc, connect, grpc-web)";

/**
 * grpc_code values as go-grpc-prometheus writes them: grpc-go's codes.Code.String() ("NotFound", not the
 * canonical "NOT_FOUND" that logs and the access log use), so existing queries and alerts match.
 */
const GO_CODE_NAMES = [
  "OK",
  "Canceled",
  "Unknown",
  "InvalidArgument",
  "DeadlineExceeded",
  "NotFound",
  "AlreadyExists",
  "PermissionDenied",
  "ResourceExhausted",
  "FailedPrecondition",
  "Aborted",
  "OutOfRange",
  "Unimplemented",
  "Internal",
  "Unavailable",
  "DataLoss",
  "Unauthenticated",
];

/** grpc-go's name of a status code; an unknown one as grpc-go writes it, "Code(99)". */
export function goCodeName(code: number): string {
  return GO_CODE_NAMES[code] ?? `Code(${code})`;
}

export function registerCallStats(options: CallStatsOptions): CallStats {
  const bounds = Float64Array.from(options.buckets);
  /** Method ("pkg.Service/Method") → its series on each transport. */
  let methods = new Map<string, Map<Transport, Series>>();

  const seriesFor = (transport: Transport, method: string, type: GrpcType): Series => {
    let byTransport = methods.get(method);
    if (byTransport === undefined) {
      byTransport = new Map();
      methods.set(method, byTransport);
    }
    let series = byTransport.get(transport);
    if (series === undefined) {
      const slash = method.lastIndexOf("/");
      series = {
        labels: {
          grpc_type: type,
          grpc_service: method.slice(0, slash),
          grpc_method: method.slice(slash + 1),
          transport,
        },
        started: 0,
        received: 0,
        sent: 0,
        sum: 0,
        count: 0,
        buckets: new Float64Array(bounds.length),
        codes: [],
      };
      byTransport.set(transport, series);
    }
    return series;
  };

  const collect = (visit: (series: Series) => void) => {
    for (const byTransport of methods.values()) for (const series of byTransport.values()) visit(series);
  };

  const reset = () => {
    methods = new Map();
  };

  const register = (
    name: string,
    help: string,
    type: "counter" | "histogram",
    values: () => PromValue[],
  ): void => {
    options.registry.registerMetric({
      name,
      help,
      type,
      aggregator: "sum",
      reset,
      async get() {
        return { name, help, type, aggregator: "sum", values: values() };
      },
    } as unknown as Parameters<Registry["registerMetric"]>[0]);
  };

  const counter = (name: string, help: string, read: (series: Series) => number) =>
    register(name, help, "counter", () => {
      const values: PromValue[] = [];
      collect((series) => {
        values.push({ labels: series.labels, value: read(series) });
      });
      return values;
    });

  counter(
    "grpc_server_started_total",
    `RPCs started on the server, by ${LABELS}.`,
    (series) => series.started,
  );
  register(
    "grpc_server_handled_total",
    `RPCs completed on the server, by ${LABELS} and grpc_code (OK, NotFound, … as grpc-go names them).`,
    "counter",
    () => {
      const values: PromValue[] = [];
      collect((series) => {
        series.codes.forEach((count, code) => {
          values.push({ labels: { ...series.labels, grpc_code: goCodeName(code) }, value: count });
        });
      });
      return values;
    },
  );
  counter(
    "grpc_server_msg_received_total",
    `RPC request messages received on the server, by ${LABELS}.`,
    (series) => series.received,
  );
  counter(
    "grpc_server_msg_sent_total",
    `RPC response messages sent by the server, by ${LABELS}.`,
    (series) => series.sent,
  );
  const histogram = "grpc_server_handling_seconds";
  register(
    histogram,
    `Time from the start of an RPC to its end, in seconds, by ${LABELS}.`,
    "histogram",
    () => {
      const values: PromValue[] = [];
      const bucket = `${histogram}_bucket`;
      collect((series) => {
        const labels = series.labels;
        let cumulative = 0;
        bounds.forEach((bound, i) => {
          cumulative += series.buckets[i] ?? 0;
          values.push({ labels: { le: bound, ...labels }, value: cumulative, metricName: bucket });
        });
        values.push({ labels: { le: "+Inf", ...labels }, value: series.count, metricName: bucket });
        values.push({ labels, value: series.sum, metricName: `${histogram}_sum` });
        values.push({ labels, value: series.count, metricName: `${histogram}_count` });
      });
      return values;
    },
  );

  return {
    start(transport, method, type) {
      seriesFor(transport, method, type).started++;
    },
    record(call) {
      const series = seriesFor(call.transport, call.method, call.type);
      series.codes[call.code] = (series.codes[call.code] ?? 0) + 1;
      series.received += call.received;
      series.sent += call.sent;
      series.count++;
      const seconds = call.seconds;
      series.sum += seconds;
      for (let i = 0; i < bounds.length; i++) {
        if (seconds <= (bounds[i] as number)) {
          (series.buckets[i] as number)++;
          break;
        }
      }
    },
  };
}
