// The HTTP listener (node:http, HTTP/1.1): the same ServiceImpl over the Connect protocol (JSON and binary)
// and gRPC-Web via connect-node, plus the operator endpoints GET /healthz, /readyz and /metrics, the route
// guard's /forward-auth and /ext-authz/… (forward-auth.ts) and the web console under /console/ (console.ts)
// when given.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import {
  createServer as createHttpsServer,
  type ServerOptions as HttpsOptions,
  type Server as HttpsServer,
} from "node:https";
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import type { ContextValues, Interceptor, ServiceImpl, StreamResponse } from "@connectrpc/connect";
import { Code, ConnectError, cors, createContextKey, createContextValues } from "@connectrpc/connect";
import { requestScope } from "../logger.ts";
import { methodName } from "../rpc/method-name.ts";
import type { CallTracer } from "../tracing/call-span.ts";
import type { Arrival, BrowserPolicy } from "./browser-policy.ts";
import { createConnectAdapter } from "./connect-adapter.ts";
import type { ConsoleSite } from "./console.ts";
import { type ForwardAuthHandler, isForwardAuthPath } from "./forward-auth.ts";
import type { HealthState } from "./health.ts";
import type { RpcMetrics } from "./metrics.ts";
import {
  type CallHooks,
  grpcTypeOf,
  type Peer,
  reportCall,
  reportStart,
  type ServerLogger,
  type Transport,
  toPublicError,
} from "./outcome.ts";
import { CallId, REQUEST_ID_HEADER, sentRequestId } from "./request-id.ts";

export const DEFAULT_READ_MAX_BYTES = 1024 * 1024;

export interface HttpServiceOptions<S extends DescService> {
  service: S;
  impl: Partial<ServiceImpl<S>>;
  health: HealthState;
  metrics: RpcMetrics;
  /** Told of each call's start and end; default `metrics` (listen.ts adds the access log here). */
  calls?: CallHooks;
  logger: ServerLogger;
  /** Connect interceptors (e.g. auth), run inside the one that records metrics and hides unexpected errors. */
  interceptors?: Interceptor[];
  /** Largest request body; a bigger one is refused with RESOURCE_EXHAUSTED. Default 1 MiB. */
  readMaxBytes?: number;
  /** When aborted, connect-node aborts the handler signals of calls still open (used at the end of a drain). */
  shutdownSignal?: AbortSignal;
  /**
   * When aborted (a drain starts), open streaming calls see their signal abort and end with UNAVAILABLE,
   * so endless streams do not hold up a graceful shutdown; unary calls run to completion.
   */
  streamShutdownSignal?: AbortSignal;
  /** ctx.values for each call, from the node request (e.g. the TLS socket's peer certificate). */
  contextValues?: (request: IncomingMessage) => ContextValues;
  /** Serve HTTPS (HTTP/1.1 over TLS) with these options instead of cleartext HTTP. */
  tls?: HttpsOptions;
  /** Host, Origin and CORS rules for browsers (browser-policy.ts); without it, none are applied. */
  browserPolicy?: BrowserPolicy;
  /** Which methods change state: a browser Origin the policy refuses may not call them. Default: none. */
  changesState?: (method: DescMethod) => boolean;
  /** /forward-auth and /ext-authz/…, any method. */
  forwardAuth?: ForwardAuthHandler;
  /** The web console, served at /console/ (console.ts); without it, those paths are not found. */
  console?: ConsoleSite;
  /** With tracing on: a server span per RPC (ended by the `calls` hooks, see withCallSpans). */
  tracer?: CallTracer;
}

/** Probe paths answer whatever the Host: they reveal nothing and change nothing (kubelet sends the pod IP). */
const PROBES = new Set(["/healthz", "/readyz"]);

const ARRIVAL = createContextKey<Arrival>({ localAddress: undefined, localPort: undefined });
const PEER = createContextKey<Peer>({ getPeer: () => "unknown" });

/** The caller of an HTTP request, formatted only when asked. */
class SocketPeer implements Peer {
  readonly #request: IncomingMessage;
  constructor(request: IncomingMessage) {
    this.#request = request;
  }
  getPeer(): string {
    const socket = this.#request.socket;
    return `${socket.remoteAddress}:${socket.remotePort}`;
  }
}

const PREFLIGHT_HEADERS = {
  "access-control-allow-methods": cors.allowedMethods.join(", "),
  "access-control-allow-headers": [...cors.allowedHeaders, "Authorization"].join(", "),
  "access-control-max-age": "7200",
};
const EXPOSED_HEADERS = cors.exposedHeaders.join(", ");

/** The request listener: operator endpoints first, then every Connect / gRPC-Web route of `service`. */
export function createHttpHandler<S extends DescService>(
  options: HttpServiceOptions<S>,
): (request: IncomingMessage, response: ServerResponse) => void {
  const policy = options.browserPolicy;
  const contextValues = options.contextValues;
  const calls = options.calls ?? options.metrics;
  const rpc = createConnectAdapter({
    routes: (router) => {
      router.service(options.service, options.impl);
    },
    interceptors: [
      outcomeInterceptor(options.logger, calls, options.streamShutdownSignal, options.tracer),
      ...(policy && options.changesState ? [originInterceptor(policy, options.changesState)] : []),
      ...(options.interceptors ?? []),
    ],
    readMaxBytes: options.readMaxBytes ?? DEFAULT_READ_MAX_BYTES,
    shutdownSignal: options.shutdownSignal,
    contextValues: (request) => {
      const node = request as IncomingMessage;
      const values = contextValues ? contextValues(node) : createContextValues();
      return values.set(ARRIVAL, arrivalOf(node)).set(PEER, new SocketPeer(node));
    },
    connect: true,
    grpcWeb: true,
    grpc: true,
    onHandlerError: (reason, handler) =>
      options.logger.warn({ err: reason, method: methodName(handler.method) }, "writing an answer failed"),
    onMalformed: (handler, request) => {
      const transport = transportOf(request.headers["content-type"] ?? null);
      const method = methodName(handler.method);
      const type = grpcTypeOf(handler.method);
      reportStart(calls, options.logger, transport, method, type);
      reportCall(calls, options.logger, {
        transport,
        method,
        type,
        code: Code.InvalidArgument,
        seconds: 0,
        received: 0,
        sent: 0,
        peer: new SocketPeer(request as IncomingMessage),
        requestId: requestScope.getStore() ?? new CallId(undefined),
      });
    },
  });
  const handle = (request: IncomingMessage, response: ServerResponse, requestId: CallId, path: string) => {
    // Every answer here carries it. Made now when the caller sent none: an HTTP/1.1 answer's headers cannot
    // wait for a log line to ask.
    response.setHeader(REQUEST_ID_HEADER, requestId.id);
    const probe = (request.method === "GET" || request.method === "HEAD") && PROBES.has(path);
    if (policy && !probe && !admitBrowser(policy, request, response, options.logger)) return;
    if (options.console?.handle(request, response, path)) return;
    if (request.method === "GET" || request.method === "HEAD") {
      if (path === "/healthz") return text(response, 200, "ok\n");
      if (path === "/readyz") {
        const warnings = options.health.warnings().map((warning) => `warning: ${warning}\n`);
        return options.health.isServing()
          ? text(response, 200, ["ready\n", ...warnings].join(""))
          : text(response, 503, ["not ready\n", ...warnings].join(""));
      }
      if (path === "/metrics") {
        options.metrics.registry.metrics().then(
          (body) => text(response, 200, body, options.metrics.registry.contentType),
          (error: unknown) => {
            options.logger.error({ err: error }, "collecting metrics failed");
            text(response, 500, "internal error\n");
          },
        );
        return;
      }
    }
    if (!rpc(request, response, path)) {
      response.writeHead(404);
      response.end();
    }
  };
  return (request, response) => {
    // Every log line of the request carries it (src/logger.ts).
    const requestId = new CallId(sentRequestId(request.headers[REQUEST_ID_HEADER]));
    const path = (request.url ?? "/").split("?", 1)[0] ?? "/";
    const forwardAuth = options.forwardAuth;
    if (forwardAuth !== undefined && isForwardAuthPath(path)) {
      // It enters the request's scope itself, for what may log, and echoes the id itself (forward-auth.ts).
      // A forward-auth call carries the original request's method and headers, never a preflight to us:
      // only the Host is checked.
      const refused = policy?.refuseHost(request.headers.host, arrivalOf(request)) ?? null;
      if (refused === null) return forwardAuth(request, response, path, requestId);
      return requestScope.run(requestId, misdirected, request, response, options.logger, refused, requestId);
    }
    requestScope.run(requestId, handle, request, response, requestId, path);
  };
}

/**
 * A node:http (or node:https, when `tls` is set) server for the handler: HTTP/1.1; cleartext h2c would need
 * preface sniffing (NOTES.md) and the contract asks only for HTTP/1.1 here.
 */
export function createHttpServer<S extends DescService>(
  options: HttpServiceOptions<S>,
): Server | HttpsServer {
  const handler = createHttpHandler(options);
  const server = options.tls ? createHttpsServer(options.tls, handler) : createServer(handler);
  server.on("clientError", (error: NodeJS.ErrnoException, socket) => {
    // Malformed HTTP: answer instead of leaving the socket hanging; headers too large have their own status.
    const status =
      error.code === "HPE_HEADER_OVERFLOW" ? "431 Request Header Fields Too Large" : "400 Bad Request";
    if (socket.writable) socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\n\r\n`);
    else socket.destroy(error);
  });
  return server;
}

function arrivalOf(request: IncomingMessage): Arrival {
  return { localAddress: request.socket.localAddress, localPort: request.socket.localPort };
}

/** The Host check: answers 421 and returns false when the Host is not one this service answers to. */
function admitHost(
  policy: BrowserPolicy,
  request: IncomingMessage,
  response: ServerResponse,
  logger: ServerLogger,
): boolean {
  const refused = policy.refuseHost(request.headers.host, arrivalOf(request));
  if (refused === null) return true;
  misdirected(request, response, logger, refused);
  return false;
}

/** Answers 421 (`refused` says why), with the request id when `requestId` is given (not set yet). */
function misdirected(
  request: IncomingMessage,
  response: ServerResponse,
  logger: ServerLogger,
  refused: string,
  requestId?: CallId,
): void {
  logger.debug?.({ host: request.headers.host, path: request.url?.slice(0, 200) }, "refused a request: host");
  if (requestId) response.setHeader(REQUEST_ID_HEADER, requestId.id);
  text(response, 421, `misdirected request: ${refused}\n`);
}

/**
 * The Host check, then CORS: a preflight is answered here (204 with the CORS headers for a listed origin,
 * 403 without them for any other), and a listed origin's requests get the headers that let its page read
 * the answer. Returns false when it has answered the request itself.
 */
function admitBrowser(
  policy: BrowserPolicy,
  request: IncomingMessage,
  response: ServerResponse,
  logger: ServerLogger,
): boolean {
  if (!admitHost(policy, request, response, logger)) return false;
  const origin = request.headers.origin;
  if (policy.corsConfigured) response.setHeader("vary", "Origin");
  if (request.method === "OPTIONS" && request.headers["access-control-request-method"] !== undefined) {
    if (!policy.corsAllowed(origin)) {
      text(response, 403, "cross-origin calls are not allowed from this origin (AUTHZ_CORS_ORIGINS)\n");
      return false;
    }
    response.writeHead(204, { ...PREFLIGHT_HEADERS, "access-control-allow-origin": origin });
    response.end();
    return false;
  }
  if (policy.corsAllowed(origin)) {
    response.setHeader("access-control-allow-origin", origin);
    response.setHeader("access-control-expose-headers", EXPOSED_HEADERS);
  }
  return true;
}

/** State-changing calls from a web page the policy does not trust are refused, whatever their credentials. */
function originInterceptor(
  policy: BrowserPolicy,
  changesState: (method: DescMethod) => boolean,
): Interceptor {
  return (next) => async (request) => {
    if (changesState(request.method)) {
      const refused = policy.refuseOrigin(
        request.header.get("origin") ?? undefined,
        request.header.get("host") ?? undefined,
        request.contextValues.get(ARRIVAL),
      );
      if (refused !== null) throw new ConnectError(refused, Code.PermissionDenied);
    }
    return next(request);
  };
}

function text(
  response: ServerResponse,
  status: number,
  body: string,
  contentType = "text/plain; charset=utf-8",
) {
  response.writeHead(status, { "content-type": contentType, "cache-control": "no-store" });
  response.end(body);
}

function transportOf(contentType: string | null): Transport {
  if (contentType?.startsWith("application/grpc-web")) return "grpc-web";
  if (contentType?.startsWith("application/grpc")) return "grpc";
  return "connect";
}

/**
 * Outermost interceptor: records each call for metrics and turns anything but a ConnectError into INTERNAL
 * "internal error" (connect-node would otherwise send the thrown error's own message to the client).
 */
function outcomeInterceptor(
  logger: ServerLogger,
  calls: CallHooks,
  streamShutdown?: AbortSignal,
  tracer?: CallTracer,
): Interceptor {
  return (next) => async (original) => {
    const request =
      original.stream && streamShutdown
        ? { ...original, signal: AbortSignal.any([original.signal, streamShutdown]) }
        : original;
    const started = performance.now();
    const method = methodName(request.method);
    const transport = transportOf(request.header.get("content-type"));
    const type = grpcTypeOf(request.method);
    const peer = request.contextValues.get(PEER);
    const requestId = requestScope.getStore() ?? new CallId(undefined);
    if (tracer !== undefined) requestId.span = tracer.startRpc(transport, method, request.header);
    reportStart(calls, logger, transport, method, type);
    // Connect and gRPC-Web over HTTP/1.1 carry one request message (no client or bidi streams here).
    const record = (code: number, sent: number) =>
      reportCall(calls, logger, {
        transport,
        method,
        type,
        code,
        seconds: (performance.now() - started) / 1000,
        received: 1,
        sent,
        peer,
        requestId,
      });
    let response: Awaited<ReturnType<typeof next>>;
    try {
      response = await next(request);
    } catch (reason) {
      const error = toPublicError(reason, logger, method);
      record(error.code, 0);
      throw error;
    }
    if (!response.stream) {
      record(0, 1);
      return response;
    }
    return {
      ...response,
      message: guardStream(response, logger, method, record, streamShutdown),
    } as StreamResponse;
  };
}

async function* guardStream(
  response: StreamResponse,
  logger: ServerLogger,
  method: string,
  record: (code: number, sent: number) => void,
  streamShutdown: AbortSignal | undefined,
): AsyncIterable<unknown> {
  let code: number | undefined;
  let sent = 0;
  try {
    for await (const message of response.message) {
      yield message;
      sent++;
    }
    if (streamShutdown?.aborted) throw new ConnectError("the server is shutting down", Code.Unavailable);
    code = 0;
  } catch (reason) {
    const error = toPublicError(reason, logger, method);
    code = error.code;
    throw error;
  } finally {
    // Stopped from outside (client gone): recorded as CANCELLED.
    record(code ?? 1, sent);
  }
}
