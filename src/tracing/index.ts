// Tracing's entry: with an OTLP endpoint configured (config.tracing), the OpenTelemetry SDK is loaded
// (./otel.ts, imported dynamically) and started; without one nothing of @opentelemetry is loaded and the
// listeners, the store and the logger run as if tracing did not exist (they hold no tracer).

import type { DatabaseConfig, TracingConfig, UpstreamConfig } from "../config.ts";
import type { Logger } from "../logger.ts";
import type { CallTracer, UpstreamTracer } from "./call-span.ts";

export type { CallSpan, CallTracer, OutgoingSpan, UpstreamTracer } from "./call-span.ts";
export { withCallSpans } from "./call-span.ts";

export interface Tracing {
  /** Starts the listeners' server spans. */
  readonly calls: CallTracer;
  /** A follower's calls to its upstream: client spans, and the traceparent that continues them there. */
  upstream(upstream: UpstreamConfig): UpstreamTracer;
  /** `store` with a `store.<method>` span (db.* attributes of `database`) around each method a call uses. */
  traceStore<S extends object>(store: S, database: DatabaseConfig): S;
  /** Exports the spans still queued, then stops the SDK. */
  shutdown(): Promise<void>;
}

/** The running SDK for `config`, or undefined (nothing loaded) when tracing is not configured. */
export async function startTracing(
  config: TracingConfig | undefined,
  logger: Logger,
): Promise<Tracing | undefined> {
  if (config === undefined) return undefined;
  const { startOtel } = await import("./otel.ts");
  const tracing = startOtel(config, logger);
  logger.info(
    { endpoint: redactUrl(config.url), sampler: config.sampler.kind, serviceName: config.serviceName },
    "tracing: exporting spans over OTLP",
  );
  return tracing;
}

/** The endpoint without credentials or query, for the log. */
function redactUrl(value: string): string {
  const url = new URL(value);
  return `${url.protocol}//${url.host}${url.pathname}`;
}
