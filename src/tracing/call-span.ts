// What the listeners see of tracing: a span per call, started from the call's metadata or headers and
// ended with its status code. No @opentelemetry import here: with tracing off (no OTLP endpoint) the
// listeners hold no tracer and this module is all that is loaded of src/tracing/.

import type { CallHooks } from "../server/outcome.ts";

/** A call's metadata (grpc-js Metadata: lists of values) or headers (fetch Headers: one joined value). */
export interface Carrier {
  get(name: string): unknown;
}

/** The server span of one call, kept with its request id (src/server/request-id.ts's CallId). */
export interface CallSpan {
  /** Hex ids for log lines (src/logger.ts). */
  readonly traceId: string;
  readonly spanId: string;
  /** Ends the span: `code` is the call's gRPC status code (0 = OK) or, for plain HTTP spans, the HTTP status. */
  end(code: number): void;
}

/** Transports as src/server/outcome.ts names them. */
export type SpanTransport = "grpc" | "connect" | "grpc-web";

export interface CallTracer {
  /**
   * Starts the server span of an RPC named `method` ("<package>.<Service>/<Method>"), continuing the
   * caller's trace when `carrier` has a valid W3C traceparent.
   */
  startRpc(transport: SpanTransport, method: string, carrier: Carrier): CallSpan;
  /** Starts the server span of a plain HTTP request (forward auth) on `route`. */
  startHttp(route: string, requestMethod: string, carrier: Carrier): CallSpan;
}

/** The client span of one call a follower makes to its upstream. */
export interface OutgoingSpan {
  /** The W3C headers (traceparent, tracestate) that make the upstream's server span this span's child. */
  readonly headers: Readonly<Record<string, string>>;
  /** Ends the span with the call's gRPC status code (0 = OK). */
  end(code: number): void;
}

export interface UpstreamTracer {
  /**
   * A client span for a call to the upstream's `method` ("<package>.<Service>/<Method>") made inside a
   * traced call of this service; undefined outside one (the change feed, the first sync), which stays
   * untraced as the store's background work does.
   */
  startCall(method: string): OutgoingSpan | undefined;
}

/** `hooks`, also ending the server span of each call it records (after them, so they log inside it). */
export function withCallSpans(hooks: CallHooks): CallHooks {
  return {
    ...(hooks.echoRequestIds !== undefined && { echoRequestIds: hooks.echoRequestIds }),
    start: (transport, method, type) => hooks.start(transport, method, type),
    record(call) {
      try {
        hooks.record(call);
      } finally {
        call.requestId.span?.end(call.code);
      }
    },
  };
}
