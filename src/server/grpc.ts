// The gRPC listener's bridge: serves a protobuf-es DescService and a Connect ServiceImpl on a @grpc/grpc-js
// Server (measured ~6x connect-node's gRPC path), so the same implementation runs on both listeners.
// Handlers see a Connect HandlerContext; Connect interceptors run here too, so auth written as one works
// on both transports. Messages are read and written by flat-codec.ts (protobuf-es, with a compiled path for
// flat messages such as CheckPermission's).

import http2, { type Http2Session } from "node:http2";
import { create, type DescMessage, type DescMethod, type DescService, isMessage } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ContextValues,
  type HandlerContext,
  type Interceptor,
  type ServiceImpl,
  type StreamRequest,
  type StreamResponse,
  type UnaryRequest,
  type UnaryResponse,
} from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { requestScope } from "../logger.ts";
import { methodName, methodPath } from "../rpc/method-name.ts";
import type { CallTracer } from "../tracing/call-span.ts";
import { codecFor, type MessageCodec } from "./flat-codec.ts";
import { GrpcCallContext } from "./grpc-context.ts";
import {
  type CallHooks,
  type GrpcType,
  grpcTypeOf,
  type Peer,
  reportCall,
  reportStart,
  type ServerLogger,
  toPublicError,
} from "./outcome.ts";
import { CallId, REQUEST_ID_HEADER, sentRequestId } from "./request-id.ts";

export const DEFAULT_MAX_RECEIVE_BYTES = 1024 * 1024;

export interface GrpcServerOptions {
  /** Largest request message accepted; bigger ones get RESOURCE_EXHAUSTED from grpc-js. Default 1 MiB. */
  maxReceiveMessageBytes?: number;
  /** Extra grpc-js channel options (keepalive etc.); they win over the ones derived above. */
  channelOptions?: grpc.ServerOptions;
}

/** A grpc-js Server with our limits; add services with addGrpcService, then bindGrpcServer. */
export function createGrpcServer(options: GrpcServerOptions = {}): grpc.Server {
  return new grpc.Server({
    "grpc.max_receive_message_length": options.maxReceiveMessageBytes ?? DEFAULT_MAX_RECEIVE_BYTES,
    // Channelz (per-call counters and call-tree bookkeeping for the channelz service, which we do not
    // serve) cost a no-op grpc-js handler a measurable share of its throughput.
    "grpc.enable_channelz": 0,
    ...options.channelOptions,
  });
}

/**
 * grpc-js's forceShutdown, plus what it misses with channelz off: it destroys only the sessions channelz
 * tracks, so open connections (and calls still running on them) would outlive it. grpc-js 1.14 also keeps
 * them per listener, in a private map; those are destroyed here.
 */
export function forceShutdownGrpcServer(server: grpc.Server): void {
  const listeners = (server as unknown as { http2Servers?: Map<unknown, { sessions?: Set<Http2Session> }> })
    .http2Servers;
  const sessions = [...(listeners?.values() ?? [])].flatMap((listener) => [...(listener.sessions ?? [])]);
  server.forceShutdown();
  for (const session of sessions) {
    if (!session.destroyed) session.destroy(undefined, http2.constants.NGHTTP2_CANCEL);
  }
}

/**
 * Binds host:port (port 0 picks a free one) and resolves to the bound port. `credentials` default to
 * insecure (h2c); TLS and mutual TLS are a matter of passing grpc.ServerCredentials.createSsl(...).
 */
export function bindGrpcServer(
  server: grpc.Server,
  host: string,
  port: number,
  credentials: grpc.ServerCredentials = grpc.ServerCredentials.createInsecure(),
): Promise<number> {
  const address = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
  return new Promise((resolve, reject) => {
    server.bindAsync(address, credentials, (error, bound) => (error ? reject(error) : resolve(bound)));
  });
}

export interface GrpcServiceOptions {
  logger: ServerLogger;
  /** Connect interceptors, applied exactly as connect-node applies them (first in the array is outermost). */
  interceptors?: Interceptor[];
  /** Told of each call's start and end, e.g. RpcMetrics. */
  calls?: CallHooks;
  /**
   * Aborted when a shutdown starts: open streaming calls stop and end with UNAVAILABLE (clients reconnect
   * elsewhere) so a graceful drain is not held up by endless streams; unary calls run to completion.
   */
  shutdownSignal?: AbortSignal;
  /**
   * Per-call context values (ctx.values) from the grpc-js call, e.g. the mTLS peer certificate via
   * call.getAuthContext(); the counterpart of connect-node's `contextValues` option.
   */
  contextValues?: (call: GrpcServerCall) => ContextValues;
  /** With tracing on: a server span per call (ended by the `calls` hooks, see withCallSpans). */
  tracer?: CallTracer;
}

/** The grpc-js call object a contextValues hook receives. */
export type GrpcServerCall =
  | grpc.ServerUnaryCall<Buffer, Buffer>
  | grpc.ServerWritableStream<Buffer, Buffer>
  | grpc.ServerDuplexStream<Buffer, Buffer>;

type AnyImpl = (input: unknown, context: HandlerContext) => unknown;
type AnyFn = Parameters<Interceptor>[0];
type Writable = grpc.ServerWritableStream<Buffer, Buffer> | grpc.ServerDuplexStream<Buffer, Buffer>;

/**
 * Adds `service` to `server`, answered by `impl`. Methods missing from `impl` answer UNIMPLEMENTED.
 * Unary, server-streaming and bidi-streaming methods are supported (client-streaming is not: none of ours
 * uses it). Request bytes are parsed here, not by grpc-js, so a malformed body is INVALID_ARGUMENT.
 */
export function addGrpcService<S extends DescService>(
  server: grpc.Server,
  service: S,
  impl: Partial<ServiceImpl<S>>,
  options: GrpcServiceOptions,
): void {
  const definition: Record<string, grpc.MethodDefinition<Buffer, Buffer>> = {};
  const handlers: grpc.UntypedServiceImplementation = {};
  for (const method of service.methods) {
    const found = (impl as Record<string, unknown>)[method.localName];
    const fn: AnyImpl =
      typeof found === "function"
        ? (found as AnyImpl).bind(impl)
        : () => {
            throw new ConnectError(
              `${service.typeName}.${method.name} is not implemented`,
              Code.Unimplemented,
            );
          };
    if (method.methodKind === "client_streaming") {
      throw new Error(`${service.typeName}.${method.name}: client-streaming methods are not supported`);
    }
    definition[method.name] = {
      path: methodPath(method),
      requestStream: method.methodKind === "bidi_streaming",
      responseStream: method.methodKind !== "unary",
      // Bytes in, bytes out: (de)serialization happens in the handler, where a failure has a proper status.
      requestSerialize: identity,
      requestDeserialize: identity,
      responseSerialize: identity,
      responseDeserialize: identity,
      originalName: method.localName,
    };
    handlers[method.name] =
      method.methodKind === "unary"
        ? unaryHandler(method, fn, options)
        : streamingHandler(method, fn, options);
  }
  server.addService(definition as grpc.ServiceDefinition, handlers);
}

function identity(value: Buffer): Buffer {
  return value;
}

function unaryHandler(
  method: DescMethod,
  impl: AnyImpl,
  options: GrpcServiceOptions,
): grpc.handleUnaryCall<Buffer, Buffer> {
  const name = methodName(method);
  const url = `/${name}`;
  const interceptors = options.interceptors ?? [];
  const tracer = options.tracer;
  const input = codecFor(method.input);
  const output = codecFor(method.output);
  const serve = (
    call: grpc.ServerUnaryCall<Buffer, Buffer>,
    callback: grpc.sendUnaryData<Buffer>,
    started: number,
    requestId: CallId,
  ) => {
    let request: unknown;
    try {
      request = input.decode(call.request);
    } catch {
      callback({
        code: grpc.status.INVALID_ARGUMENT,
        details: MALFORMED,
        metadata: echo(undefined, requestId.id),
      });
      record(options, name, "unary", Code.InvalidArgument, started, 0, 0, call, requestId);
      return;
    }
    const context = new GrpcCallContext(call, method, url, options.contextValues?.(call));
    const done: UnaryCall = { call, callback, context, output, name, options, started, requestId };
    let answer: unknown;
    try {
      answer =
        interceptors.length === 0
          ? impl(request, context)
          : invokeIntercepted(impl, method, request, context, interceptors);
    } catch (error) {
      failUnary(done, error);
      return;
    }
    // An answer given at once goes out at once: no promise, no closures.
    if (isPromise(answer)) {
      answer.then(
        (value) => succeedUnary(done, value),
        (reason: unknown) => failUnary(done, reason),
      );
    } else {
      succeedUnary(done, answer);
    }
  };
  return (call, callback) => {
    const started = performance.now();
    reportStart(options.calls, options.logger, "grpc", name, "unary");
    const requestId = new CallId(sentRequestId(onlyValue(call.metadata.get(REQUEST_ID_HEADER))));
    if (tracer !== undefined) requestId.span = tracer.startRpc("grpc", name, call.metadata);
    // Every log line written while the call runs carries its request id (src/logger.ts).
    requestScope.run(requestId, serve, call, callback, started, requestId);
  };
}

/** A metadata key's value when it was sent exactly once. */
function onlyValue(values: grpc.MetadataValue[]): grpc.MetadataValue | undefined {
  return values.length === 1 ? values[0] : undefined;
}

/** `metadata` (or new metadata) with the call's request id, echoed to the client. */
function echo(metadata: grpc.Metadata | undefined, requestId: string): grpc.Metadata {
  const echoed = metadata ?? new grpc.Metadata();
  echoed.set(REQUEST_ID_HEADER, requestId);
  return echoed;
}

/** One unary call in progress, for the functions that end it. */
interface UnaryCall {
  call: grpc.ServerUnaryCall<Buffer, Buffer>;
  callback: grpc.sendUnaryData<Buffer>;
  context: GrpcCallContext;
  /** The codec of the method's output. */
  output: MessageCodec;
  name: string;
  options: GrpcServiceOptions;
  started: number;
  requestId: CallId;
}

function succeedUnary(done: UnaryCall, output: unknown): void {
  const { call, context } = done;
  let bytes: Buffer;
  try {
    bytes = done.output.encode(output);
  } catch (error) {
    failUnary(done, error);
    return;
  }
  const header = context.headerMetadata();
  if (done.requestId.known || done.options.calls?.echoRequestIds) {
    call.sendMetadata(echo(header, done.requestId.id));
  } else if (header) {
    call.sendMetadata(header);
  }
  done.callback(null, bytes, context.trailerMetadata());
  const cancelled = call.cancelled;
  const code = cancelled ? Code.Canceled : 0;
  record(done.options, done.name, "unary", code, done.started, 1, cancelled ? 0 : 1, call, done.requestId);
  // As in connect-node, the signal also fires when the call completes: downstream work stops.
  context.abort(CALL_COMPLETED);
}

function failUnary(done: UnaryCall, reason: unknown): void {
  const { call, context, options } = done;
  // After a cancel or the deadline, whatever the handler threw (often an AbortError) is not a bug.
  const error = context.stopped() ?? toPublicError(reason, options.logger, done.name);
  done.callback(toStatus(error, context, done.requestId.id));
  const code = call.cancelled ? Code.Canceled : error.code;
  record(options, done.name, "unary", code, done.started, 1, 0, call, done.requestId);
  context.abort(CALL_COMPLETED);
}

function isPromise(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as PromiseLike<unknown> | undefined)?.then === "function";
}

function streamingHandler(
  method: DescMethod,
  impl: AnyImpl,
  options: GrpcServiceOptions,
): grpc.handleServerStreamingCall<Buffer, Buffer> | grpc.handleBidiStreamingCall<Buffer, Buffer> {
  const name = methodName(method);
  const url = `/${name}`;
  const interceptors = options.interceptors ?? [];
  const tracer = options.tracer;
  const type = grpcTypeOf(method);
  const input = codecFor(method.input);
  const serve = (call: Writable, started: number, requestId: CallId) => {
    // Streams are not the hot path: their id always goes back.
    const messages = { received: 0, sent: 0, requestId: requestId.id };
    let requests: AsyncIterable<unknown>;
    if (method.methodKind === "server_streaming") {
      try {
        requests = once(input.decode((call as grpc.ServerWritableStream<Buffer, Buffer>).request));
        messages.received = 1;
      } catch {
        const metadata = echo(undefined, requestId.id);
        call.emit("error", { code: grpc.status.INVALID_ARGUMENT, details: MALFORMED, metadata });
        record(options, name, type, Code.InvalidArgument, started, 0, 0, call, requestId);
        return;
      }
    } else {
      requests = parseEach(call as grpc.ServerDuplexStream<Buffer, Buffer>, input, messages);
    }
    const context = new GrpcCallContext(
      call,
      method,
      url,
      options.contextValues?.(call),
      options.shutdownSignal,
    );
    // Streams watch their signal from the start: a cancel, the deadline or a shutdown ends them.
    void context.signal;

    pump(call, method, impl, requests, context, interceptors, messages)
      .then(
        () => {
          if (call.cancelled) return Code.Canceled;
          const stopped = context.stopped();
          if (stopped) {
            // Stopped by deadline or shutdown: end with that reason, not with OK.
            call.emit("error", toStatus(stopped, context, requestId.id));
            return stopped.code;
          }
          // No message, so no header went out: the id goes with the trailers.
          call.end(
            messages.sent === 0 ? echo(context.trailerMetadata(), requestId.id) : context.trailerMetadata(),
          );
          return 0;
        },
        (reason: unknown) => {
          if (call.cancelled) return Code.Canceled;
          const error = context.stopped() ?? toPublicError(reason, options.logger, name);
          call.emit("error", toStatus(error, context, requestId.id));
          return error.code;
        },
      )
      .then((code) => {
        record(options, name, type, code, started, messages.received, messages.sent, call, requestId);
        context.abort(CALL_COMPLETED);
      });
  };
  return (call: Writable) => {
    const started = performance.now();
    reportStart(options.calls, options.logger, "grpc", name, type);
    const requestId = new CallId(sentRequestId(onlyValue(call.metadata.get(REQUEST_ID_HEADER))));
    if (tracer !== undefined) requestId.span = tracer.startRpc("grpc", name, call.metadata);
    requestScope.run(requestId, serve, call, started, requestId);
  };
}

const MALFORMED = "request message is malformed";

/** The abort reason once a call has ended; nothing reports it to a client. */
const CALL_COMPLETED = new ConnectError("the call has completed", Code.Canceled);

/** Runs the implementation (through the interceptors) and writes its output, honouring backpressure. */
async function pump(
  call: Writable,
  method: DescMethod,
  impl: AnyImpl,
  input: AsyncIterable<unknown>,
  context: GrpcCallContext,
  interceptors: Interceptor[],
  messages: { sent: number; requestId: string },
): Promise<void> {
  const output = await invokeStreaming(impl, method, input, context, interceptors);
  const iterator = output[Symbol.asyncIterator]();
  const stopped = abortPromise(context.signal);
  let finished = false;
  let headerSent = false;
  try {
    for (;;) {
      // A generator that ignores the signal must not hold the call open after a cancel.
      const next = await Promise.race([iterator.next(), stopped]);
      if (next === STOPPED || next.done === true) {
        finished = next !== STOPPED;
        return;
      }
      if (!headerSent) {
        headerSent = true;
        call.sendMetadata(echo(context.headerMetadata(), messages.requestId));
      }
      const bytes = codecFor(method.output).encode(next.value);
      messages.sent++;
      if (!call.write(bytes)) {
        if ((await Promise.race([drained(call), stopped])) === STOPPED) return;
      }
      if (context.signal.aborted) return;
    }
  } catch (error) {
    finished = true;
    throw error;
  } finally {
    if (!finished) {
      // Ends the generator (runs its finally blocks) once it reaches its next yield.
      iterator.return?.().catch(() => {});
    }
  }
}

const STOPPED = Symbol("stopped");

function abortPromise(signal: AbortSignal): Promise<typeof STOPPED> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve(STOPPED);
    else signal.addEventListener("abort", () => resolve(STOPPED), { once: true });
  });
}

function drained(call: Writable): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      call.off("drain", done);
      call.off("close", done);
      resolve();
    };
    call.on("drain", done);
    call.on("close", done);
  });
}

async function* once<T>(value: T): AsyncIterable<T> {
  yield value;
}

async function* parseEach(
  call: grpc.ServerDuplexStream<Buffer, Buffer>,
  codec: MessageCodec,
  messages: { received: number },
): AsyncIterable<unknown> {
  for await (const chunk of call) {
    messages.received++;
    let message: unknown;
    try {
      message = codec.decode(chunk as Buffer);
    } catch {
      throw new ConnectError(MALFORMED, Code.InvalidArgument);
    }
    yield message;
  }
}

/** A unary call through the interceptors, as connect-node runs it; the handler's output, normalized. */
async function invokeIntercepted(
  impl: AnyImpl,
  method: DescMethod,
  input: unknown,
  context: GrpcCallContext,
  interceptors: Interceptor[],
): Promise<ReturnType<typeof normalize>> {
  const inner: AnyFn = async (request) => {
    const message = normalize(method.output, await impl(request.message, withRequest(context, request)));
    return { ...responseCommon(context, method), stream: false, message } as UnaryResponse;
  };
  const request = { ...requestCommon(context, method), stream: false, message: input } as UnaryRequest;
  const response = await applyInterceptors(inner, interceptors)(request);
  copyHeaders(response.header, context.responseHeader);
  copyHeaders(response.trailer, context.responseTrailer);
  return normalize(method.output, response.message);
}

async function invokeStreaming(
  impl: AnyImpl,
  method: DescMethod,
  input: AsyncIterable<unknown>,
  context: HandlerContext,
  interceptors: Interceptor[],
): Promise<AsyncIterable<unknown>> {
  const call = async (messages: AsyncIterable<unknown>, ctx: HandlerContext) => {
    if (method.methodKind === "server_streaming") {
      return impl(await single(messages), ctx) as AsyncIterable<unknown>;
    }
    return impl(messages, ctx) as AsyncIterable<unknown>;
  };
  if (interceptors.length === 0) return call(input, context);
  const inner: AnyFn = async (request) => {
    const message = await call(request.message as AsyncIterable<unknown>, withRequest(context, request));
    return { ...responseCommon(context, method), stream: true, message } as StreamResponse;
  };
  const request = { ...requestCommon(context, method), stream: true, message: input } as StreamRequest;
  const response = await applyInterceptors(inner, interceptors)(request);
  copyHeaders(response.header, context.responseHeader);
  return response.message as AsyncIterable<unknown>;
}

async function single(messages: AsyncIterable<unknown>): Promise<unknown> {
  for await (const message of messages) return message;
  throw new ConnectError("missing request message", Code.InvalidArgument);
}

function applyInterceptors(next: AnyFn, interceptors: Interceptor[]): AnyFn {
  // Same order as connect-es: the first interceptor in the array is the outermost.
  return interceptors.reduceRight((inner, interceptor) => interceptor(inner), next);
}

function requestCommon(context: HandlerContext, method: DescMethod) {
  return {
    service: method.parent,
    method,
    requestMethod: context.requestMethod,
    url: context.url,
    signal: context.signal,
    header: context.requestHeader,
    contextValues: context.values,
  };
}

function responseCommon(context: HandlerContext, method: DescMethod) {
  return { service: method.parent, method, header: context.responseHeader, trailer: context.responseTrailer };
}

/** The context as an interceptor passed the request on (its headers, signal and values may differ). */
function withRequest(context: HandlerContext, request: UnaryRequest | StreamRequest): HandlerContext {
  return {
    method: context.method,
    service: context.service,
    url: context.url,
    requestMethod: context.requestMethod,
    protocolName: context.protocolName,
    timeoutMs: () => context.timeoutMs(),
    responseHeader: context.responseHeader,
    responseTrailer: context.responseTrailer,
    requestHeader: request.header,
    signal: request.signal,
    values: request.contextValues,
  };
}

function copyHeaders(from: Headers, to: Headers): void {
  if (from === to) return;
  for (const key of [...to.keys()]) to.delete(key);
  for (const [key, value] of from) to.append(key, value);
}

function normalize(schema: DescMessage, value: unknown) {
  return isMessage(value, schema) ? value : create(schema, value as never);
}

/**
 * The message travels in the grpc-message trailer; clients reset the whole HTTP/2 session on a header
 * block past their limit (often 8–16 KiB), failing every other call on the connection with it.
 */
const MAX_DETAILS_LENGTH = 2048;

function capDetails(message: string): string {
  return message.length <= MAX_DETAILS_LENGTH ? message : `${message.slice(0, MAX_DETAILS_LENGTH - 1)}…`;
}

function toStatus(error: ConnectError, context: GrpcCallContext, requestId: string): grpc.StatusObject {
  return {
    // Connect's Code numbers are gRPC's status codes.
    code: error.code as number as grpc.status,
    details: capDetails(error.rawMessage),
    // A failed call may not have sent a header: the request id goes with the status.
    metadata: echo(context.trailerMetadata(error.metadata), requestId),
  };
}

function record(
  options: GrpcServiceOptions,
  method: string,
  type: GrpcType,
  code: number,
  started: number,
  received: number,
  sent: number,
  peer: Peer,
  requestId: CallId,
): void {
  const seconds = (performance.now() - started) / 1000;
  reportCall(options.calls, options.logger, {
    transport: "grpc",
    method,
    type,
    code,
    seconds,
    received,
    sent,
    peer,
    requestId,
  });
}
