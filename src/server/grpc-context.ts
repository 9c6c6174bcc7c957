// The HandlerContext the grpc-js bridge hands to a handler, built lazily: its AbortSignal (with the deadline
// timer and the cancel and shutdown listeners behind it) and its Headers exist only once a handler reads
// them. Connect's createHandlerContext builds all of that eagerly, which cost more per cached check than
// the check itself; a handler sees the same context either way.

import type { DescMethod, DescService } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ContextValues,
  createContextValues,
  decodeBinaryHeader,
  encodeBinaryHeader,
  type HandlerContext,
} from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";

/** What the context needs of a grpc-js server call (unary or streaming). */
export interface ContextCall {
  readonly metadata: grpc.Metadata;
  readonly cancelled: boolean;
  getDeadline(): grpc.Deadline;
  once(event: "cancelled", listener: () => void): unknown;
  off(event: "cancelled", listener: () => void): unknown;
}

const CANCELLED = () => new ConnectError("the call was cancelled", Code.Canceled);
const TIMED_OUT = () => new ConnectError("the operation timed out", Code.DeadlineExceeded);
const SHUTTING_DOWN = () => new ConnectError("the server is shutting down", Code.Unavailable);

export class GrpcCallContext implements HandlerContext {
  readonly method: DescMethod;
  readonly service: DescService;
  readonly url: string;
  readonly requestMethod = "POST";
  readonly protocolName = "grpc";
  readonly #call: ContextCall;
  /** Epoch milliseconds; Infinity without a grpc-timeout. */
  readonly #deadline: number;
  readonly #shutdown: AbortSignal | undefined;
  #values: ContextValues | undefined;
  #controller: AbortController | undefined;
  /** Why the call ended, when it ended before anyone asked for the signal. */
  #reason: unknown;
  #timer: NodeJS.Timeout | undefined;
  #onCancel: (() => void) | undefined;
  #onShutdown: (() => void) | undefined;
  #requestHeader: Headers | undefined;
  #responseHeader: Headers | undefined;
  #responseTrailer: Headers | undefined;

  /**
   * `shutdown` (streams): the signal aborts with UNAVAILABLE when it does. `values` default to an empty
   * ContextValues.
   */
  constructor(
    call: ContextCall,
    method: DescMethod,
    url: string,
    values: ContextValues | undefined,
    shutdown?: AbortSignal,
  ) {
    this.#call = call;
    this.method = method;
    this.service = method.parent;
    this.url = url;
    this.#values = values;
    this.#shutdown = shutdown;
    const deadline = call.getDeadline();
    const at = deadline instanceof Date ? deadline.getTime() : deadline;
    this.#deadline = Number.isFinite(at) ? at : Number.POSITIVE_INFINITY;
  }

  get values(): ContextValues {
    this.#values ??= createContextValues();
    return this.#values;
  }

  /**
   * Aborts at the deadline, when the client cancels, when a shutdown starts (streams), and when the call
   * completes (so downstream work stops), like connect-node's.
   */
  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      const controller = new AbortController();
      this.#controller = controller;
      if (this.#reason !== undefined) controller.abort(this.#reason);
      else this.#watch(controller);
    }
    return this.#controller.signal;
  }

  #watch(controller: AbortController): void {
    if (this.#call.cancelled) {
      controller.abort(CANCELLED());
      return;
    }
    if (this.#shutdown?.aborted) {
      controller.abort(SHUTTING_DOWN());
      return;
    }
    const remaining = this.#deadline - Date.now();
    if (remaining <= 0) {
      controller.abort(TIMED_OUT());
      return;
    }
    if (remaining !== Number.POSITIVE_INFINITY) {
      this.#timer = setTimeout(() => this.abort(TIMED_OUT()), remaining);
    }
    // Made here, not per call: most calls never get this far.
    this.#onCancel = () => this.abort(CANCELLED());
    this.#call.once("cancelled", this.#onCancel);
    if (this.#shutdown) {
      this.#onShutdown = () => this.abort(SHUTTING_DOWN());
      this.#shutdown.addEventListener("abort", this.#onShutdown);
    }
  }

  timeoutMs(): number | undefined {
    return this.#deadline === Number.POSITIVE_INFINITY ? undefined : this.#deadline - Date.now();
  }

  get requestHeader(): Headers {
    this.#requestHeader ??= new MetadataHeaders(this.#call.metadata);
    return this.#requestHeader;
  }

  get responseHeader(): Headers {
    this.#responseHeader ??= new Headers();
    return this.#responseHeader;
  }

  get responseTrailer(): Headers {
    this.#responseTrailer ??= new Headers();
    return this.#responseTrailer;
  }

  /** Response headers a handler set, as grpc-js metadata; undefined when none. */
  headerMetadata(): grpc.Metadata | undefined {
    return this.#responseHeader && headersToMetadata(this.#responseHeader);
  }

  /** Response trailers a handler set (plus `extra`), as grpc-js metadata; undefined when none. */
  trailerMetadata(extra?: Headers): grpc.Metadata | undefined {
    if (extra === undefined || isEmpty(extra)) {
      return this.#responseTrailer && headersToMetadata(this.#responseTrailer);
    }
    const trailer = new Headers(this.#responseTrailer);
    for (const [key, value] of extra) trailer.append(key, value);
    return headersToMetadata(trailer);
  }

  /**
   * Why the call stopped before its handler finished (cancelled, past its deadline, shutting down), or
   * undefined: what the signal says, or would say had anyone asked for it.
   */
  stopped(): ConnectError | undefined {
    const controller = this.#controller;
    if (controller !== undefined) {
      return controller.signal.aborted ? asConnectError(controller.signal.reason) : undefined;
    }
    if (this.#reason !== undefined) return asConnectError(this.#reason);
    if (this.#call.cancelled) return CANCELLED();
    if (this.#shutdown?.aborted) return SHUTTING_DOWN();
    if (Date.now() >= this.#deadline) return TIMED_OUT();
    return undefined;
  }

  /** Aborts the signal (the first reason wins) and stops watching the call. */
  abort(reason: unknown): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    if (this.#onCancel !== undefined) {
      this.#call.off("cancelled", this.#onCancel);
      this.#onCancel = undefined;
    }
    if (this.#onShutdown !== undefined) {
      this.#shutdown?.removeEventListener("abort", this.#onShutdown);
      this.#onShutdown = undefined;
    }
    if (this.#controller !== undefined) this.#controller.abort(reason);
    else this.#reason ??= reason;
  }
}

function asConnectError(reason: unknown): ConnectError {
  if (reason instanceof ConnectError) return reason;
  return new ConnectError("the deadline was exceeded", Code.DeadlineExceeded);
}

function isEmpty(headers: Headers): boolean {
  for (const _ of headers.keys()) return false;
  return true;
}

/** A header value fetch Headers stores verbatim: visible ASCII, inner spaces, nothing to trim or refuse. */
const VERBATIM = /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/;
/** A metadata key, also a valid header name (binary ones hold Buffers, which take the copying path). */
const PLAIN_KEY = /^[0-9a-z_.-]+$/;

/**
 * The request metadata as fetch Headers (binary values base64-encoded, as connect-node presents them).
 * Copying metadata into Headers costs about a microsecond per entry (undici validates each), and a
 * handler usually reads one header (`authorization`): `get` and `has` of a plain header read the metadata
 * directly, anything else copies it all first and then behaves as Headers does.
 */
export class MetadataHeaders extends Headers {
  #metadata: grpc.Metadata | undefined;

  constructor(metadata: grpc.Metadata) {
    super();
    this.#metadata = metadata;
  }

  /**
   * The values of a plain header while the metadata is not copied yet, when Headers would hold them
   * verbatim; undefined otherwise.
   */
  direct(name: string): string[] | undefined {
    const metadata = this.#metadata;
    if (metadata === undefined) return undefined;
    const key = name.toLowerCase();
    if (!PLAIN_KEY.test(key)) return undefined;
    const values = metadata.get(key);
    for (const value of values) if (typeof value !== "string" || !VERBATIM.test(value)) return undefined;
    return values as string[];
  }

  /** Copies the metadata into the Headers (once); from then on they are plain Headers. */
  copy(): void {
    const metadata = this.#metadata;
    if (metadata === undefined) return;
    this.#metadata = undefined;
    for (const [key, values] of Object.entries(metadata.toJSON())) {
      for (const value of values) {
        try {
          HEADERS.append.call(this, key, typeof value === "string" ? value : encodeBinaryHeader(value));
        } catch {
          // A value fetch Headers refuses (not a ByteString) cannot be one a handler relies on.
        }
      }
    }
  }
}

// The overrides are assigned to the prototype: undici-types declares Headers' members as function-valued
// properties, which a class body cannot override with methods.
const HEADERS = Headers.prototype;
Object.defineProperties(MetadataHeaders.prototype, {
  get: {
    configurable: true,
    writable: true,
    value(this: MetadataHeaders, name: string): string | null {
      const values = this.direct(name);
      if (values !== undefined) return values.length === 0 ? null : values.join(", ");
      this.copy();
      return HEADERS.get.call(this, name);
    },
  },
  has: {
    configurable: true,
    writable: true,
    value(this: MetadataHeaders, name: string): boolean {
      const values = this.direct(name);
      if (values !== undefined) return values.length > 0;
      this.copy();
      return HEADERS.has.call(this, name);
    },
  },
});
// Every other member copies the metadata first.
for (const member of [
  "append",
  "set",
  "delete",
  "getSetCookie",
  "forEach",
  "keys",
  "values",
  "entries",
  Symbol.iterator,
] as const) {
  const inherited = HEADERS[member] as (...args: unknown[]) => unknown;
  Object.defineProperty(MetadataHeaders.prototype, member, {
    configurable: true,
    writable: true,
    value: function (this: MetadataHeaders, ...args: unknown[]) {
      this.copy();
      return inherited.apply(this, args);
    },
  });
}

/** fetch Headers → grpc metadata; undefined when there are none. */
export function headersToMetadata(headers: Headers): grpc.Metadata | undefined {
  let metadata: grpc.Metadata | undefined;
  headers.forEach((value, key) => {
    metadata ??= new grpc.Metadata();
    try {
      if (key.endsWith("-bin")) metadata.add(key, Buffer.from(decodeBinaryHeader(value)));
      else metadata.add(key, value);
    } catch {
      // grpc-js rejects reserved or malformed keys; dropping one header beats failing the call.
    }
  });
  return metadata;
}
