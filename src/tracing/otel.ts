// The OpenTelemetry SDK behind tracing, loaded (dynamic import, from index.ts) only when an OTLP endpoint
// is configured: a tracer provider exporting OTLP/HTTP protobuf in batches, W3C trace context taken from
// each call, server spans for the listeners (src/tracing/call-span.ts) and `store.<method>` client spans
// around the database work a call causes. The call's request scope (src/logger.ts) is the context carrier:
// the listeners put the call's span there, and the context manager registered here reads it, so the
// store, the logger and any OpenTelemetry code see the call's span without a second scope per call.

import { createRequire } from "node:module";
import {
  type Attributes,
  type Context,
  context,
  type DiagLogger,
  DiagLogLevel,
  diag,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  type TextMapSetter,
  type Tracer,
  trace,
} from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { defaultResource, resourceFromAttributes } from "@opentelemetry/resources";
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BatchSpanProcessor,
  ParentBasedSampler,
  type Sampler,
  TraceIdRatioBasedSampler,
  TracerProvider,
} from "@opentelemetry/sdk-trace";
import {
  ATTR_DB_NAMESPACE,
  ATTR_DB_OPERATION_NAME,
  ATTR_DB_SYSTEM_NAME,
  ATTR_ERROR_TYPE,
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_HTTP_ROUTE,
  ATTR_RPC_STATUS_CODE,
  ATTR_RPC_SYSTEM_NAME,
  ATTR_SERVER_ADDRESS,
  ATTR_SERVER_PORT,
  ATTR_SERVICE_NAME,
  ATTR_SERVICE_VERSION,
} from "@opentelemetry/semantic-conventions";
import type { DatabaseConfig, TracingConfig, UpstreamConfig } from "../config.ts";
import { type Logger, requestScope } from "../logger.ts";
import { codeName } from "../server/outcome.ts";
import type {
  CallSpan,
  CallTracer,
  Carrier,
  OutgoingSpan,
  SpanTransport,
  UpstreamTracer,
} from "./call-span.ts";
import type { Tracing } from "./index.ts";

// The attributes most trace backends and dashboards still key on (semantic conventions before RPC and
// database spans were stabilised); the package keeps them in its unstable entry point, which is not meant to
// be imported, so they are spelled here. Their stable successors are set beside them where the names differ.
const ATTR_RPC_SYSTEM = "rpc.system";
const ATTR_RPC_SERVICE = "rpc.service";
const ATTR_RPC_METHOD = "rpc.method";
const ATTR_RPC_GRPC_STATUS_CODE = "rpc.grpc.status_code";
const ATTR_RPC_CONNECT_RPC_ERROR_CODE = "rpc.connect_rpc.error_code";
const ATTR_DB_SYSTEM = "db.system";

/**
 * gRPC codes that mean the server failed (the semantic conventions' list for server spans): the span's
 * status is ERROR for these only; a denial, a bad argument or a missing user is the caller's outcome.
 */
const SERVER_FAULTS = new Set([2, 4, 12, 13, 14, 15]);

/** Reads one header from grpc-js Metadata (lists of values) or fetch Headers (a string or null). */
const GETTER: TextMapGetter<Carrier> = {
  keys: () => [],
  get(carrier, key) {
    const value = carrier.get(key);
    if (typeof value === "string") return value;
    if (Array.isArray(value)) {
      const strings = value.filter((item): item is string => typeof item === "string");
      return strings.length === 0 ? undefined : strings;
    }
    return undefined;
  },
};

const SETTER: TextMapSetter<Record<string, string>> = {
  set(carrier, key, value) {
    carrier[key] = value;
  },
};

/**
 * The span's status for a call's gRPC code, as the semantic conventions have it: a server span is an ERROR
 * for the codes that mean the server failed, a client span for any code but OK.
 */
function setRpcStatus(span: Span, code: number, kind: SpanKind.SERVER | SpanKind.CLIENT): void {
  const name = codeName(code);
  span.setAttribute(ATTR_RPC_GRPC_STATUS_CODE, code);
  span.setAttribute(ATTR_RPC_STATUS_CODE, name);
  if (kind === SpanKind.CLIENT ? code !== 0 : SERVER_FAULTS.has(code)) {
    span.setAttribute(ATTR_ERROR_TYPE, name);
    span.setStatus({ code: SpanStatusCode.ERROR, message: name });
  }
}

/** rpc.* attributes of a method named "<package>.<Service>/<Method>" (gRPC-Web counts as gRPC). */
function rpcAttributes(transport: SpanTransport, method: string): Attributes {
  const slash = method.indexOf("/");
  return {
    [ATTR_RPC_SYSTEM]: transport === "connect" ? "connect_rpc" : "grpc",
    [ATTR_RPC_SYSTEM_NAME]: transport === "connect" ? "connectrpc" : "grpc",
    [ATTR_RPC_SERVICE]: method.slice(0, slash),
    [ATTR_RPC_METHOD]: method.slice(slash + 1),
  };
}

abstract class ServerSpan implements CallSpan {
  readonly span: Span;
  /** The call's context: the caller's (from traceparent) with this span in it. */
  readonly context: Context;

  constructor(span: Span, parent: Context) {
    this.span = span;
    this.context = trace.setSpan(parent, span);
  }

  get traceId(): string {
    return this.span.spanContext().traceId;
  }

  get spanId(): string {
    return this.span.spanContext().spanId;
  }

  abstract end(code: number): void;
}

class RpcSpan extends ServerSpan {
  readonly #connect: boolean;

  constructor(span: Span, parent: Context, transport: SpanTransport) {
    super(span, parent);
    this.#connect = transport === "connect";
  }

  override end(code: number): void {
    const span = this.span;
    if (span.isRecording()) {
      setRpcStatus(span, code, SpanKind.SERVER);
      if (code !== 0 && this.#connect) {
        // Connect's error codes are gRPC's names in lower case, "canceled" spelled the American way.
        const name = codeName(code).toLowerCase();
        span.setAttribute(ATTR_RPC_CONNECT_RPC_ERROR_CODE, code === 1 ? "canceled" : name);
      }
    }
    span.end();
  }
}

class HttpSpan extends ServerSpan {
  override end(status: number): void {
    const span = this.span;
    if (span.isRecording()) {
      span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, status);
      if (status >= 500) {
        span.setAttribute(ATTR_ERROR_TYPE, String(status));
        span.setStatus({ code: SpanStatusCode.ERROR });
      }
    }
    span.end();
  }
}

/**
 * OpenTelemetry's AsyncLocalStorage context manager, whose active context defaults to the call's: the span
 * the listener put in the request scope (src/logger.ts's requestScope), unless code inside the call made
 * another context active with context.with().
 */
class CallContextManager extends AsyncLocalStorageContextManager {
  override active(): Context {
    const own = super.active();
    if (own !== ROOT_CONTEXT) return own;
    const span = requestScope.getStore()?.span;
    return span instanceof ServerSpan ? span.context : ROOT_CONTEXT;
  }
}

function samplerOf(config: TracingConfig["sampler"]): Sampler {
  switch (config.kind) {
    case "always_on":
      return new AlwaysOnSampler();
    case "always_off":
      return new AlwaysOffSampler();
    case "traceidratio":
      return new TraceIdRatioBasedSampler(config.ratio);
    case "parentbased_always_on":
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
    case "parentbased_always_off":
      return new ParentBasedSampler({ root: new AlwaysOffSampler() });
    case "parentbased_traceidratio":
      return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(config.ratio) });
  }
}

/** The database attributes every store span carries (never the URL: it may hold a password). */
export function databaseAttributes(database: DatabaseConfig): Attributes {
  if (database.kind === "sqlite") {
    return {
      [ATTR_DB_SYSTEM]: "sqlite",
      [ATTR_DB_SYSTEM_NAME]: "sqlite",
      [ATTR_DB_NAMESPACE]: database.path,
    };
  }
  const attributes: Attributes = { [ATTR_DB_SYSTEM]: "postgresql", [ATTR_DB_SYSTEM_NAME]: "postgresql" };
  try {
    const url = new URL(database.url);
    const name = decodeURIComponent(url.pathname.replace(/^\//, ""));
    if (name !== "") attributes[ATTR_DB_NAMESPACE] = name;
    const host = url.hostname.replace(/^\[|\]$/g, "") || url.searchParams.get("host");
    if (host) attributes[ATTR_SERVER_ADDRESS] = host;
    attributes[ATTR_SERVER_PORT] = url.port === "" ? 5432 : Number(url.port);
  } catch {
    // config.ts has parsed it already.
  }
  return attributes;
}

/** Store methods without a span: long-lived or about the store itself, never a call's database work. */
const UNTRACED = new Set(["close", "subscribe", "constructor"]);

function isPromise(value: unknown): value is Promise<unknown> {
  return typeof (value as Promise<unknown> | undefined)?.then === "function";
}

function failed(span: Span, error: unknown): void {
  if (error instanceof Error) span.recordException(error);
  span.setAttribute(ATTR_ERROR_TYPE, error instanceof Error ? error.name : "Error");
  span.setStatus({
    code: SpanStatusCode.ERROR,
    message: error instanceof Error ? error.message : String(error),
  });
}

/**
 * `store`, with a `store.<method>` client span around each method a call uses (the call's span as
 * parent). Work outside a call (the change feed, health pings, pruning) gets no span of its own.
 */
function traceStore<S extends object>(
  store: S,
  tracer: Tracer,
  contextManager: CallContextManager,
  attributes: Attributes,
): S {
  const wrapped = new Map<string, unknown>();
  const wrap = (key: string, method: (...args: unknown[]) => unknown) => {
    const name = `store.${key}`;
    const spanAttributes = { ...attributes, [ATTR_DB_OPERATION_NAME]: key };
    return (...args: unknown[]): unknown => {
      const parent = contextManager.active();
      if (trace.getSpan(parent) === undefined) return method.apply(store, args);
      const span = tracer.startSpan(name, { kind: SpanKind.CLIENT, attributes: spanAttributes }, parent);
      let result: unknown;
      try {
        result = method.apply(store, args);
      } catch (error) {
        failed(span, error);
        span.end();
        throw error;
      }
      if (!isPromise(result)) {
        span.end();
        return result;
      }
      return result.then(
        (value) => {
          span.end();
          return value;
        },
        (error: unknown) => {
          failed(span, error);
          span.end();
          throw error;
        },
      );
    };
  };
  return new Proxy(store, {
    get(target, key) {
      const value: unknown = Reflect.get(target, key, target);
      if (typeof key !== "string" || typeof value !== "function" || UNTRACED.has(key)) return value;
      let method = wrapped.get(key);
      if (method === undefined) {
        method = wrap(key, value as (...args: unknown[]) => unknown);
        wrapped.set(key, method);
      }
      return method;
    },
  });
}

/** Export problems (collector down, refused) reach the service's log as warnings. */
function diagLogger(logger: Logger): DiagLogger {
  const warn = (message: string, ...args: unknown[]) =>
    logger.warn({ otel: args.length > 0 ? args.map(String) : undefined }, `OpenTelemetry: ${message}`);
  const ignore = () => {};
  return { error: warn, warn, info: ignore, debug: ignore, verbose: ignore };
}

/** Starts the SDK: spans go to `config.url` in batches; `shutdown` sends what is left. */
export function startOtel(config: TracingConfig, logger: Logger): Tracing {
  diag.setLogger(diagLogger(logger), { logLevel: DiagLogLevel.WARN, suppressOverrideMessage: true });
  const version = (createRequire(import.meta.url)("../../package.json") as { version: string }).version;
  const resource = defaultResource().merge(
    resourceFromAttributes({
      ...config.resourceAttributes,
      [ATTR_SERVICE_NAME]: config.serviceName,
      [ATTR_SERVICE_VERSION]: config.resourceAttributes[ATTR_SERVICE_VERSION] ?? version,
    }),
  );
  const exporter = new OTLPTraceExporter({ url: config.url, headers: config.headers });
  const provider = new TracerProvider({
    resource,
    sampler: samplerOf(config.sampler),
    spanProcessors: [new BatchSpanProcessor({ exporter, ...config.batch })],
  });
  const contextManager = new CallContextManager();
  const propagator = new W3CTraceContextPropagator();
  // Registered for any OpenTelemetry code in the process; our own spans use these objects directly.
  trace.setGlobalTracerProvider(provider);
  context.setGlobalContextManager(contextManager);
  propagation.setGlobalPropagator(propagator);
  const tracer = provider.getTracer("flip-authz", version);

  const calls: CallTracer = {
    startRpc(transport: SpanTransport, method: string, carrier: Carrier): CallSpan {
      const parent = propagator.extract(ROOT_CONTEXT, carrier, GETTER);
      const span = tracer.startSpan(
        method,
        {
          kind: SpanKind.SERVER,
          attributes: rpcAttributes(transport, method),
        },
        parent,
      );
      return new RpcSpan(span, parent, transport);
    },
    startHttp(route: string, requestMethod: string, carrier: Carrier): CallSpan {
      const parent = propagator.extract(ROOT_CONTEXT, carrier, GETTER);
      const span = tracer.startSpan(
        `${requestMethod} ${route}`,
        {
          kind: SpanKind.SERVER,
          attributes: { [ATTR_HTTP_REQUEST_METHOD]: requestMethod, [ATTR_HTTP_ROUTE]: route },
        },
        parent,
      );
      return new HttpSpan(span, parent);
    },
  };

  const upstream = ({ target, host }: UpstreamConfig): UpstreamTracer => {
    const peer = {
      [ATTR_SERVER_ADDRESS]: host,
      [ATTR_SERVER_PORT]: Number(target.slice(target.lastIndexOf(":") + 1)),
    };
    return {
      startCall(method: string): OutgoingSpan | undefined {
        const parent = contextManager.active();
        if (trace.getSpan(parent) === undefined) return undefined;
        const span = tracer.startSpan(
          method,
          { kind: SpanKind.CLIENT, attributes: { ...rpcAttributes("grpc", method), ...peer } },
          parent,
        );
        const headers: Record<string, string> = {};
        propagator.inject(trace.setSpan(parent, span), headers, SETTER);
        return {
          headers,
          end(code: number) {
            if (span.isRecording()) setRpcStatus(span, code, SpanKind.CLIENT);
            span.end();
          },
        };
      },
    };
  };

  let stopping: Promise<void> | undefined;
  return {
    calls,
    upstream,
    traceStore: (store, database) => traceStore(store, tracer, contextManager, databaseAttributes(database)),
    shutdown() {
      stopping ??= provider.shutdown().finally(() => {
        trace.disable();
        context.disable();
        propagation.disable();
        diag.disable();
      });
      return stopping;
    },
  };
}
