// Per-call RPC statistics (a count and a latency histogram by transport, method and status code), kept in
// plain numbers and typed arrays and turned into Prometheus series only when /metrics is scraped. Recording
// a call is one Map lookup and a few increments; prom-client's own inc()/observe() re-validate and re-hash
// the label set on every call, which cost more than a cached check itself. The metric names and label
// names live in the options, so renaming them changes nothing here.

import type { Registry } from "prom-client";
import type { CallRecord, Transport } from "./outcome.ts";

export interface CallStatsOptions {
  registry: Registry;
  counter: { name: string; help: string };
  histogram: { name: string; help: string; buckets: readonly number[] };
  /** The label set of one series (the histogram adds `le`). */
  labels(transport: Transport, method: string, code: number): Record<string, string>;
}

export interface CallStats {
  record(call: CallRecord): void;
}

interface CodeStats {
  count: number;
  sum: number;
  /** Calls per bucket, not cumulative: index i counts durations in (bound[i-1], bound[i]]. */
  buckets: Float64Array;
}

/** Per transport and method: the stats of each status code seen, indexed by code. */
type Series = Map<Transport, CodeStats[]>;

interface PromValue {
  labels: Record<string, string | number>;
  value: number;
  metricName?: string;
}

export function registerCallStats(options: CallStatsOptions): CallStats {
  const bounds = Float64Array.from(options.histogram.buckets);
  let methods = new Map<string, Series>();

  const statsFor = (transport: Transport, method: string, code: number): CodeStats => {
    let series = methods.get(method);
    if (series === undefined) {
      series = new Map();
      methods.set(method, series);
    }
    let codes = series.get(transport);
    if (codes === undefined) {
      codes = [];
      series.set(transport, codes);
    }
    let stats = codes[code];
    if (stats === undefined) {
      stats = { count: 0, sum: 0, buckets: new Float64Array(bounds.length) };
      codes[code] = stats;
    }
    return stats;
  };

  const each = (visit: (transport: Transport, method: string, code: number, stats: CodeStats) => void) => {
    for (const [method, series] of methods) {
      for (const [transport, codes] of series) {
        codes.forEach((stats, code) => {
          visit(transport, method, code, stats);
        });
      }
    }
  };

  const reset = () => {
    methods = new Map();
  };

  const counter = options.counter;
  options.registry.registerMetric({
    name: counter.name,
    help: counter.help,
    type: "counter",
    aggregator: "sum",
    reset,
    async get() {
      const values: PromValue[] = [];
      each((transport, method, code, stats) => {
        values.push({ labels: options.labels(transport, method, code), value: stats.count });
      });
      return { name: counter.name, help: counter.help, type: "counter", aggregator: "sum", values };
    },
  } as unknown as Parameters<Registry["registerMetric"]>[0]);

  const histogram = options.histogram;
  options.registry.registerMetric({
    name: histogram.name,
    help: histogram.help,
    type: "histogram",
    aggregator: "sum",
    reset,
    async get() {
      const values: PromValue[] = [];
      const bucket = `${histogram.name}_bucket`;
      each((transport, method, code, stats) => {
        const labels = options.labels(transport, method, code);
        let cumulative = 0;
        bounds.forEach((bound, i) => {
          cumulative += stats.buckets[i] ?? 0;
          values.push({ labels: { le: bound, ...labels }, value: cumulative, metricName: bucket });
        });
        values.push({ labels: { le: "+Inf", ...labels }, value: stats.count, metricName: bucket });
        values.push({ labels, value: stats.sum, metricName: `${histogram.name}_sum` });
        values.push({ labels, value: stats.count, metricName: `${histogram.name}_count` });
      });
      return { name: histogram.name, help: histogram.help, type: "histogram", aggregator: "sum", values };
    },
  } as unknown as Parameters<Registry["registerMetric"]>[0]);

  return {
    record(call) {
      const stats = statsFor(call.transport, call.method, call.code);
      stats.count++;
      stats.sum += call.seconds;
      const seconds = call.seconds;
      for (let i = 0; i < bounds.length; i++) {
        if (seconds <= (bounds[i] as number)) {
          (stats.buckets[i] as number)++;
          break;
        }
      }
    },
  };
}
