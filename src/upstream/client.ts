// The follower's one gRPC channel to its upstream flip-authz (AUTHZ_UPSTREAM): h2c or TLS (mutual when
// AUTHZ_UPSTREAM_CERT_FILE is set), keepalive pings so a frozen or vanished upstream is noticed, quick
// reconnects. Calls carry the follower's own token, or, when forwarded, the caller's own header; made
// inside a traced call, each is a client span whose traceparent continues the trace upstream.

import {
  create,
  type DescMessage,
  type DescMethodServerStreaming,
  type DescMethodUnary,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { parseCertificates, parsePrivateKey, readTlsFile } from "../auth/tls.ts";
import { ConfigError, type UpstreamConfig } from "../config.ts";
import { methodName } from "../rpc/method-name.ts";
import type { OutgoingSpan, UpstreamTracer } from "../tracing/call-span.ts";

export interface CallOptions {
  /**
   * The `authorization` header to send: undefined sends the follower's own token; null sends none (a
   * forwarded call whose caller sent none).
   */
  authorization?: string | null;
  /** The `x-request-id` to send: the forwarded call's, so both services log the same id. */
  requestId?: string;
  /** Absolute deadline (Date.now() based); none when undefined. */
  deadline?: number;
  /** Cancels the call when it aborts. */
  signal?: AbortSignal;
}

export interface UpstreamClient {
  /** host:port, for log lines. */
  readonly target: string;
  unary<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    input: MessageInitShape<I>,
    options?: CallOptions,
  ): Promise<MessageShape<O>>;
  stream<I extends DescMessage, O extends DescMessage>(
    method: DescMethodServerStreaming<I, O>,
    input: MessageInitShape<I>,
    options?: CallOptions,
  ): grpc.ClientReadableStream<MessageShape<O>>;
  close(): void;
}

/** Reads the TLS files of an https:// upstream; a bad file is a ConfigError naming its variable. */
function channelCredentials(upstream: UpstreamConfig): grpc.ChannelCredentials {
  const tls = upstream.tls;
  if (tls === undefined) return grpc.credentials.createInsecure();
  let ca: Buffer | null = null;
  if (tls.caFile !== undefined) {
    ca = readTlsFile(tls.caFile, "AUTHZ_UPSTREAM_CA_FILE");
    parseCertificates(ca, tls.caFile, "AUTHZ_UPSTREAM_CA_FILE");
  }
  let key: Buffer | null = null;
  let cert: Buffer | null = null;
  if (tls.certFile !== undefined && tls.keyFile !== undefined) {
    cert = readTlsFile(tls.certFile, "AUTHZ_UPSTREAM_CERT_FILE");
    key = readTlsFile(tls.keyFile, "AUTHZ_UPSTREAM_KEY_FILE");
    const [leaf] = parseCertificates(cert, tls.certFile, "AUTHZ_UPSTREAM_CERT_FILE");
    const keyObject = parsePrivateKey(key, tls.keyFile, "AUTHZ_UPSTREAM_KEY_FILE");
    if (leaf === undefined || !leaf.checkPrivateKey(keyObject)) {
      throw new ConfigError(
        "AUTHZ_UPSTREAM_KEY_FILE",
        `${tls.keyFile} does not match the certificate in AUTHZ_UPSTREAM_CERT_FILE`,
      );
    }
  }
  // A null CA means the system's roots (grpc-js uses Node's bundled ones).
  return grpc.credentials.createSsl(ca, key, cert);
}

/**
 * Builds the channel (it connects lazily). Throws ConfigError for unreadable TLS files. With `tracer`
 * (tracing on), calls made inside a traced call get a client span.
 */
export function createUpstreamClient(upstream: UpstreamConfig, tracer?: UpstreamTracer): UpstreamClient {
  // Pings every fifth of the staleness bound (at most every 100 ms, at least every 10 s): a peer that
  // stops answering them is dropped well within the bound, so the stream reconnects elsewhere.
  const pingMs = Math.min(10_000, Math.max(100, Math.floor(upstream.maxStalenessMs / 5)));
  const client = new grpc.Client(upstream.target, channelCredentials(upstream), {
    "grpc.keepalive_time_ms": pingMs,
    // Half the bound to answer a ping: a frozen upstream is still dropped within it, a busy one is not.
    "grpc.keepalive_timeout_ms": Math.max(pingMs, Math.floor(upstream.maxStalenessMs / 2)),

    "grpc.keepalive_permit_without_calls": 1,
    // grpc-js waits up to two minutes between reconnects by default; an upstream's restart takes seconds.
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
  });
  const own = upstream.token === undefined ? null : `Bearer ${upstream.token}`;
  const metadataFor = (options: CallOptions, span: OutgoingSpan | undefined): grpc.Metadata => {
    const metadata = new grpc.Metadata();
    const authorization = options.authorization === undefined ? own : options.authorization;
    if (authorization !== null) metadata.set("authorization", authorization);
    if (options.requestId !== undefined) metadata.set("x-request-id", options.requestId);
    if (span !== undefined) for (const [key, value] of Object.entries(span.headers)) metadata.set(key, value);
    return metadata;
  };
  const callOptions = (options: CallOptions): grpc.CallOptions =>
    options.deadline === undefined ? {} : { deadline: options.deadline };

  return {
    target: upstream.target,
    unary(method, input, options = {}) {
      const name = methodName(method);
      const span = tracer?.startCall(name);
      return new Promise((resolve, reject) => {
        const call = client.makeUnaryRequest(
          `/${name}`,
          (value: MessageShape<typeof method.input>) => Buffer.from(toBinary(method.input, value)),
          (bytes: Buffer) => fromBinary(method.output, bytes),
          create(method.input, input),
          metadataFor(options, span),
          callOptions(options),
          (error, value) => {
            span?.end(error ? error.code : 0);
            options.signal?.removeEventListener("abort", cancel);
            if (error) reject(error);
            else resolve(value as MessageShape<typeof method.output>);
          },
        );
        const cancel = () => call.cancel();
        if (options.signal?.aborted) cancel();
        else options.signal?.addEventListener("abort", cancel, { once: true });
      });
    },
    stream(method, input, options = {}) {
      const name = methodName(method);
      const span = tracer?.startCall(name);
      const call = client.makeServerStreamRequest(
        `/${name}`,
        (value: MessageShape<typeof method.input>) => Buffer.from(toBinary(method.input, value)),
        (bytes: Buffer) => fromBinary(method.output, bytes),
        create(method.input, input),
        metadataFor(options, span),
        callOptions(options),
      );
      if (span !== undefined) call.on("status", (status: grpc.StatusObject) => span.end(status.code));
      const signal = options.signal;
      if (signal) {
        const cancel = () => call.cancel();
        if (signal.aborted) cancel();
        else {
          signal.addEventListener("abort", cancel, { once: true });
          call.on("close", () => signal.removeEventListener("abort", cancel));
        }
      }
      return call;
    },
    close() {
      client.close();
    },
  };
}

/** A gRPC status error from a call, or undefined for anything else. */
export function statusOf(error: unknown): grpc.ServiceError | undefined {
  if (typeof error === "object" && error !== null && "code" in error && "details" in error) {
    return error as grpc.ServiceError;
  }
  return undefined;
}

const CODE_NAMES = Object.fromEntries(Object.entries(grpc.status).map(([name, code]) => [code, name]));

/**
 * One line saying what went wrong talking to the upstream, naming the setting to look at: what an operator
 * reads in the log. Never includes the token.
 */
export function describeUpstreamError(error: unknown, target: string): string {
  const status = statusOf(error);
  if (status === undefined) return `the upstream at ${target} failed: ${String(error)}`;
  const code = CODE_NAMES[status.code] ?? `code ${status.code}`;
  const detail = status.details === "" ? "" : `: ${status.details}`;
  switch (status.code) {
    case grpc.status.UNAUTHENTICATED:
    case grpc.status.PERMISSION_DENIED:
      return `the upstream at ${target} refuses this follower (${code}${detail}): is AUTHZ_UPSTREAM_TOKEN one of its service tokens?`;
    case grpc.status.UNIMPLEMENTED:
      return `the upstream at ${target} does not serve flip.authz.v1.AuthzService (${code}${detail}): is AUTHZ_UPSTREAM a flip-authz gRPC listener?`;
    case grpc.status.UNAVAILABLE:
      return `the upstream at ${target} cannot be reached (${code}${detail})`;
    case grpc.status.DEADLINE_EXCEEDED:
      return `the upstream at ${target} did not answer in time (${code})`;
    default:
      return `the upstream at ${target} answered ${code}${detail}`;
  }
}
