// createAuthzClient: every AuthzService RPC as a typed method over one gRPC channel, with a default and
// per-call deadlines, retries of UNAVAILABLE (exponential backoff with jitter, never past the deadline),
// TLS or mutual TLS, and a bearer token.

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
import { AuthzService } from "./gen/flip/authz/v1/authz_pb.js";
import { type AuthzSession, createSession } from "./session.js";

type Service = typeof AuthzService;
type MethodName = keyof Service["method"];

/** A credential, or a function giving the current one (e.g. a token that is refreshed). */
export type TokenSource = string | (() => string | Promise<string>);

export interface TlsOptions {
  /** PEM of the CA(s) the server's certificate must chain to; the system's CAs when absent. */
  ca?: string | Buffer;
  /** PEM client certificate and key, for a server that wants mutual TLS. */
  cert?: string | Buffer;
  key?: string | Buffer;
}

export interface RetryOptions {
  /** Attempts in all, the first included (default 5). Retries stop earlier when the deadline would pass. */
  maxAttempts?: number;
  /** The first backoff (default 50 ms); each next one doubles, up to `maxBackoffMs` (default 2000 ms). */
  initialBackoffMs?: number;
  maxBackoffMs?: number;
}

export interface RetryInfo {
  method: string;
  /** The attempt that failed (1 = the first). */
  attempt: number;
  delayMs: number;
  error: AuthzCallError;
}

export interface AuthzClientOptions {
  /** `host:port` (cleartext h2c unless `tls` is set), `http://host:port` or `https://host:port`. */
  address: string;
  /** Sent as `authorization: Bearer <token>` on every call unless a call gives its own. */
  token?: TokenSource;
  /** TLS settings; an `https://` address uses TLS with the system's CAs even without them. */
  tls?: TlsOptions;
  /** The deadline of a unary call when the call gives none (default 5000 ms). Streams have none by default. */
  timeoutMs?: number;
  retry?: RetryOptions;
  /** Told of every retry (for logs and metrics). */
  onRetry?: (info: RetryInfo) => void;
  /** Extra @grpc/grpc-js channel options. */
  channelOptions?: grpc.ChannelOptions;
}

export interface CallOptions {
  /** This call's deadline, in ms from now. */
  timeoutMs?: number;
  /** This call's credential (e.g. the end user's access token for a write), instead of the client's. */
  token?: TokenSource;
  signal?: AbortSignal;
}

/** A call that failed: the gRPC status code and message the server (or the channel) gave. */
export class AuthzCallError extends Error {
  readonly code: grpc.status;
  readonly codeName: string;
  readonly details: string;
  /** How many attempts were made. */
  readonly attempts: number;
  constructor(code: grpc.status, details: string, attempts: number) {
    const codeName = grpc.status[code] ?? `CODE_${code}`;
    super(`${codeName}: ${details}`);
    this.name = "AuthzCallError";
    this.code = code;
    this.codeName = codeName;
    this.details = details;
    this.attempts = attempts;
  }
}

export { status as Code } from "@grpc/grpc-js";

/** One typed method per RPC of AuthzService: unary ones resolve to the answer, WatchChanges iterates. */
export type AuthzMethods = {
  [K in MethodName]: Service["method"][K] extends DescMethodUnary<infer I, infer O>
    ? (request: MessageInitShape<I>, options?: CallOptions) => Promise<MessageShape<O>>
    : Service["method"][K] extends DescMethodServerStreaming<infer I, infer O>
      ? (request: MessageInitShape<I>, options?: CallOptions) => AsyncIterable<MessageShape<O>>
      : never;
};

export interface AuthzClient extends AuthzMethods {
  /**
   * A read-your-writes session: the `written_at` of its writes is passed as `at_least_as_fresh` to its later
   * reads (unless a read names its own), on whichever replica or follower they land. `after` starts it at
   * a revision already known (a `written_at` from elsewhere, or one seen in WatchChanges).
   */
  session(after?: string): AuthzSession;
  close(): void;
}

const DEFAULT_TIMEOUT_MS = 5000;

function parseAddress(address: string, tls: TlsOptions | undefined): { target: string; secure: boolean } {
  const match = /^(https?):\/\/([^/]+?)\/?$/.exec(address);
  if (match) {
    const [, scheme, hostPort = ""] = match;
    const secure = scheme === "https" || tls !== undefined;
    const hasPort = /:\d+$/.test(hostPort) && !/^\[[^\]]*\]$/.test(hostPort);
    return { target: hasPort ? hostPort : `${hostPort}:${scheme === "https" ? 443 : 80}`, secure };
  }
  if (!/:\d+$/.test(address)) {
    throw new TypeError(
      `address must be host:port, http://host:port or https://host:port (got ${JSON.stringify(address)})`,
    );
  }
  return { target: address, secure: tls !== undefined };
}

function credentialsFor(secure: boolean, tls: TlsOptions | undefined): grpc.ChannelCredentials {
  if (!secure) return grpc.credentials.createInsecure();
  const pem = (value: string | Buffer | undefined) =>
    value === undefined ? null : Buffer.isBuffer(value) ? value : Buffer.from(value);
  return grpc.credentials.createSsl(pem(tls?.ca), pem(tls?.key), pem(tls?.cert));
}

async function tokenOf(source: TokenSource | undefined): Promise<string | undefined> {
  if (source === undefined) return undefined;
  return typeof source === "string" ? source : source();
}

function toCallError(error: unknown, attempts: number): AuthzCallError {
  if (error instanceof AuthzCallError) return error;
  const status = error as Partial<grpc.ServiceError>;
  if (typeof status.code === "number") return new AuthzCallError(status.code, status.details ?? "", attempts);
  return new AuthzCallError(
    grpc.status.UNKNOWN,
    error instanceof Error ? error.message : String(error),
    attempts,
  );
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(done, ms);
    function done() {
      signal?.removeEventListener("abort", abort);
      resolve();
    }
    function abort() {
      clearTimeout(timer);
      reject(new AuthzCallError(grpc.status.CANCELLED, "the call was cancelled", 0));
    }
    if (signal?.aborted) abort();
    else signal?.addEventListener("abort", abort, { once: true });
  });
}

/** Connects lazily; `close()` when done. */
export function createAuthzClient(options: AuthzClientOptions): AuthzClient {
  const { target, secure } = parseAddress(options.address, options.tls);
  const channel = new grpc.Client(target, credentialsFor(secure, options.tls), {
    // grpc-js waits up to two minutes between reconnects by default; a server restart takes seconds.
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
    ...options.channelOptions,
  });
  const defaultTimeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const maxAttempts = Math.max(1, options.retry?.maxAttempts ?? 5);
  const initialBackoffMs = options.retry?.initialBackoffMs ?? 50;
  const maxBackoffMs = options.retry?.maxBackoffMs ?? 2000;

  const metadataFor = async (call: CallOptions | undefined): Promise<grpc.Metadata> => {
    const metadata = new grpc.Metadata();
    const token = await tokenOf(call?.token ?? options.token);
    if (token !== undefined) metadata.set("authorization", `Bearer ${token}`);
    return metadata;
  };

  const attempt = <I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    request: MessageShape<I>,
    metadata: grpc.Metadata,
    deadline: number,
    signal: AbortSignal | undefined,
  ) =>
    new Promise<MessageShape<O>>((resolve, reject) => {
      const call = channel.makeUnaryRequest(
        `/${method.parent.typeName}/${method.name}`,
        (value: MessageShape<I>) => Buffer.from(toBinary(method.input, value)),
        (bytes: Buffer) => fromBinary(method.output, bytes),
        request,
        metadata,
        { deadline },
        (error, value) => {
          signal?.removeEventListener("abort", cancel);
          if (error) reject(error);
          else resolve(value as MessageShape<O>);
        },
      );
      const cancel = () => call.cancel();
      if (signal?.aborted) cancel();
      else signal?.addEventListener("abort", cancel, { once: true });
    });

  async function unary<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    input: MessageInitShape<I>,
    call?: CallOptions,
  ): Promise<MessageShape<O>> {
    const deadline = Date.now() + (call?.timeoutMs ?? defaultTimeoutMs);
    const request = create(method.input, input);
    const metadata = await metadataFor(call);
    for (let attempts = 1; ; attempts++) {
      try {
        return await attempt(method, request, metadata, deadline, call?.signal);
      } catch (reason) {
        const error = toCallError(reason, attempts);
        if (error.code !== grpc.status.UNAVAILABLE || attempts >= maxAttempts) throw error;
        // Exponential backoff with jitter: half the step fixed, half random, so clients spread out.
        const step = Math.min(maxBackoffMs, initialBackoffMs * 2 ** (attempts - 1));
        const delayMs = Math.round(step / 2 + (Math.random() * step) / 2);
        if (Date.now() + delayMs >= deadline) throw error;
        options.onRetry?.({ method: method.name, attempt: attempts, delayMs, error });
        await sleep(delayMs, call?.signal);
      }
    }
  }

  async function* serverStream<I extends DescMessage, O extends DescMessage>(
    method: DescMethodServerStreaming<I, O>,
    input: MessageInitShape<I>,
    call?: CallOptions,
  ): AsyncGenerator<MessageShape<O>> {
    const metadata = await metadataFor(call);
    const stream = channel.makeServerStreamRequest(
      `/${method.parent.typeName}/${method.name}`,
      (value: MessageShape<I>) => Buffer.from(toBinary(method.input, value)),
      (bytes: Buffer) => fromBinary(method.output, bytes),
      create(method.input, input),
      metadata,
      call?.timeoutMs === undefined ? {} : { deadline: Date.now() + call.timeoutMs },
    );
    const cancel = () => stream.cancel();
    call?.signal?.addEventListener("abort", cancel, { once: true });
    try {
      for await (const message of stream) yield message as MessageShape<O>;
    } catch (error) {
      throw toCallError(error, 1);
    } finally {
      call?.signal?.removeEventListener("abort", cancel);
      stream.cancel();
    }
  }

  const methods: Record<string, unknown> = {};
  for (const method of AuthzService.methods) {
    methods[method.localName] =
      method.methodKind === "server_streaming"
        ? (input: never, call?: CallOptions) => serverStream(method as DescMethodServerStreaming, input, call)
        : (input: never, call?: CallOptions) => unary(method as DescMethodUnary, input, call);
  }
  const client = methods as unknown as AuthzMethods;
  return Object.assign(methods, {
    session: (after?: string) => createSession(client, after),
    close: () => channel.close(),
  }) as unknown as AuthzClient;
}
