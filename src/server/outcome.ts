// What every transport shares about the end of a call: the logger it reports to, the record a metrics hook
// receives, and the one rule that turns anything thrown by a handler into the status a client may see.

import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { CallSpan } from "../tracing/call-span.ts";

/** The part of a pino logger the transports use; a pino Logger satisfies it. */
export interface ServerLogger {
  error(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  debug?(obj: object, msg?: string): void;
}

export type Transport = "grpc" | "connect" | "grpc-web";

/** go-grpc-prometheus's grpc_type label. */
export type GrpcType = "unary" | "client_stream" | "server_stream" | "bidi_stream";

const GRPC_TYPES: Record<DescMethod["methodKind"], GrpcType> = {
  unary: "unary",
  client_streaming: "client_stream",
  server_streaming: "server_stream",
  bidi_streaming: "bidi_stream",
};

export function grpcTypeOf(method: DescMethod): GrpcType {
  return GRPC_TYPES[method.methodKind];
}

/** One finished call, as a metrics hook sees it. `code` is 0 for OK, else the gRPC status code. */
export interface CallRecord {
  transport: Transport;
  /** "<package>.<Service>/<Method>", e.g. "flip.authz.v1.AuthzService/CheckPermission". */
  method: string;
  type: GrpcType;
  code: number;
  seconds: number;
  /** Request messages read and response messages written. */
  received: number;
  sent: number;
  /** The caller, read only by an access log. */
  peer: Peer;
  /** x-request-id: the caller's, or made for the call when read; with the call's span when tracing. */
  requestId: { readonly id: string; readonly span?: CallSpan | undefined };
}

/** Who called ("address:port"); asked only when a log line needs it. grpc-js calls are Peers. */
export interface Peer {
  getPeer(): string;
}

/** What the listeners report calls to (RpcMetrics satisfies it): the start and the end of each call. */
export interface CallHooks {
  start(transport: Transport, method: string, type: GrpcType): void;
  record(call: CallRecord): void;
  /**
   * When true, the gRPC listener sends every call's request id back, made if the caller sent none (the
   * access log wants ids callers can quote). Otherwise only ids the caller sent, or that a log line or a
   * failure made, go back: a UUID and a header per call cost the cached check measurably.
   */
  readonly echoRequestIds?: boolean;
}

/** Hands a finished call to the hooks; a failing hook is logged, never the call's problem. */
export function reportCall(hooks: CallHooks | undefined, logger: ServerLogger, record: CallRecord): void {
  if (!hooks) return;
  try {
    hooks.record(record);
  } catch (error) {
    logger.warn({ err: error, method: record.method, code: codeName(record.code) }, "call hook failed");
  }
}

/** Tells the hooks a call started; as reportCall, a failing hook is only logged. */
export function reportStart(
  hooks: CallHooks | undefined,
  logger: ServerLogger,
  transport: Transport,
  method: string,
  type: GrpcType,
): void {
  if (!hooks) return;
  try {
    hooks.start(transport, method, type);
  } catch (error) {
    logger.warn({ err: error, method }, "call hook failed");
  }
}

export const INTERNAL_MESSAGE = "internal error";

const CODE_NAMES: Record<number, string> = {
  0: "OK",
  1: "CANCELLED",
  2: "UNKNOWN",
  3: "INVALID_ARGUMENT",
  4: "DEADLINE_EXCEEDED",
  5: "NOT_FOUND",
  6: "ALREADY_EXISTS",
  7: "PERMISSION_DENIED",
  8: "RESOURCE_EXHAUSTED",
  9: "FAILED_PRECONDITION",
  10: "ABORTED",
  11: "OUT_OF_RANGE",
  12: "UNIMPLEMENTED",
  13: "INTERNAL",
  14: "UNAVAILABLE",
  15: "DATA_LOSS",
  16: "UNAUTHENTICATED",
};

/** The canonical gRPC name of a status code ("OK", "NOT_FOUND", …), for metric labels and logs. */
export function codeName(code: number): string {
  return CODE_NAMES[code] ?? `CODE_${code}`;
}

/**
 * A ConnectError passes through unchanged (src/rpc already chose its code and message). Anything else is a
 * bug or an unmapped failure: the client gets INTERNAL "internal error" and the cause goes to the log only,
 * so SQL, stack traces or secrets never leave the process.
 */
export function toPublicError(reason: unknown, logger: ServerLogger, method: string): ConnectError {
  if (reason instanceof ConnectError) return reason;
  logger.error({ err: reason, method }, "unexpected error in RPC handler");
  return new ConnectError(INTERNAL_MESSAGE, Code.Internal);
}
