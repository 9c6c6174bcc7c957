// The least of HTTP/2 (RFC 9113) a gRPC load generator needs, written straight to a TCP socket: unary calls
// out, the end of each answer back. node:http2's client makes a stream object with its events and buffers
// per call; against a no-op grpc-js server on the other core it ran out at about 4k calls/s on a machine
// where pgbench made 5k queries/s, so the cold path's ratio measured the generator, not the service.
// Here a call is one buffer out and a few header reads back.
//
// What it reads of an answer: nothing of its headers (no HPACK decoder; the server's header blocks are
// skipped), only frame types, flags and lengths. A unary gRPC call succeeded when its answer carried a
// message (a DATA frame holding one whole gRPC message frame) before the end of the stream; a failed one
// is trailers-only, or reset. grpc-load.ts replays a failed call through node:http2 to say why it failed.

import net from "node:net";

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

// Frame types and flags (RFC 9113 §6).
const DATA = 0x0;
const HEADERS = 0x1;
const RST_STREAM = 0x3;
const SETTINGS = 0x4;
const PING = 0x6;
const GOAWAY = 0x7;
const WINDOW_UPDATE = 0x8;
const END_STREAM = 0x1;
const ACK = 0x1;
const END_HEADERS = 0x4;
// Settings (§6.5.2).
const SETTINGS_ENABLE_PUSH = 0x2;
const SETTINGS_INITIAL_WINDOW_SIZE = 0x4;
const SETTINGS_MAX_FRAME_SIZE = 0x5;

const DEFAULT_WINDOW = 65_535;
const MAX_WINDOW = 2 ** 31 - 1;
/** Received bytes after which the connection's window is topped up again. */
const WINDOW_REFILL = 1 << 20;

/** Whether a call got its message before its stream ended, and if not, what ended it. */
export type CallDone = (ok: boolean, why: string) => void;

interface Call {
  done: CallDone;
  message: boolean;
}

/** Writes a frame's 9-byte header and its payload into `bytes` at `at`; returns where the frame ends. */
function putFrame(
  bytes: Buffer,
  at: number,
  type: number,
  flags: number,
  stream: number,
  payload: Buffer,
): number {
  bytes.writeUIntBE(payload.length, at, 3);
  bytes[at + 3] = type;
  bytes[at + 4] = flags;
  bytes.writeUInt32BE(stream, at + 5);
  payload.copy(bytes, at + 9);
  return at + 9 + payload.length;
}

function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const bytes = Buffer.allocUnsafe(9 + payload.length);
  putFrame(bytes, 0, type, flags, stream, payload);
  return bytes;
}

/** An HPACK string literal (RFC 7541 §5.2), not Huffman-coded; header values here are short. */
function literal(value: string): Buffer {
  const bytes = Buffer.from(value, "latin1");
  if (bytes.length > 126) throw new Error(`header value too long for this encoder: ${value}`);
  return Buffer.concat([Buffer.from([bytes.length]), bytes]);
}

/** An integer with an `n`-bit prefix (RFC 7541 §5.1) after the pattern bits in `first`. */
function integer(first: number, n: number, value: number): Buffer {
  const max = (1 << n) - 1;
  if (value < max) return Buffer.from([first | value]);
  const bytes = [first | max];
  let rest = value - max;
  while (rest >= 128) {
    bytes.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  bytes.push(rest);
  return Buffer.from(bytes);
}

/**
 * The request's header block, the same for every call: static-table entries and literals without
 * indexing (RFC 7541 §6.1, §6.2.2), so neither side keeps a dynamic table for it.
 */
function requestHeaders(authority: string, path: string, extra: Record<string, string>): Buffer {
  const indexedName = (index: number, value: string) =>
    Buffer.concat([integer(0x00, 4, index), literal(value)]);
  const newName = (name: string, value: string) =>
    Buffer.concat([Buffer.from([0x00]), literal(name.toLowerCase()), literal(value)]);
  return Buffer.concat([
    Buffer.from([0x83]), // :method POST (static 3)
    Buffer.from([0x86]), // :scheme http (static 6)
    indexedName(4, path), // :path
    indexedName(1, authority), // :authority
    indexedName(31, "application/grpc"), // content-type
    newName("te", "trailers"),
    ...Object.entries(extra).map(([name, value]) => newName(name, value)),
  ]);
}

export class RawGrpcConnection {
  readonly #socket: net.Socket;
  readonly #headerBlock: Buffer;
  readonly #calls = new Map<number, Call>();
  /** Frames written at the end of this tick, in one write. */
  #out: Buffer[] = [];
  #flushScheduled = false;
  #nextStream = 1;
  /** What the server lets us send on the connection, and on each new stream. */
  #sendWindow = DEFAULT_WINDOW;
  #streamWindow = DEFAULT_WINDOW;
  #maxFrame = 16_384;
  /** Calls waiting for the connection's send window. */
  #waiting: { body: Buffer; done: CallDone }[] = [];
  #received = 0;
  #input: Buffer | undefined;
  #failed: string | undefined;

  private constructor(socket: net.Socket, headerBlock: Buffer) {
    this.#socket = socket;
    this.#headerBlock = headerBlock;
    socket.on("data", (chunk: Buffer) => this.#read(chunk));
    socket.on("error", (error) => this.#fail(`socket: ${error.message}`));
    socket.on("close", () => this.#fail("connection closed"));
  }

  static connect(
    port: number,
    path: string,
    headers: Record<string, string> = {},
  ): Promise<RawGrpcConnection> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: "127.0.0.1", port, noDelay: true });
      socket.once("error", reject);
      socket.once("connect", () => {
        socket.off("error", reject);
        const connection = new RawGrpcConnection(socket, requestHeaders(`127.0.0.1:${port}`, path, headers));
        const settings = Buffer.alloc(12);
        settings.writeUInt16BE(SETTINGS_ENABLE_PUSH, 0);
        settings.writeUInt32BE(0, 2);
        settings.writeUInt16BE(SETTINGS_INITIAL_WINDOW_SIZE, 6);
        settings.writeUInt32BE(MAX_WINDOW, 8);
        const increment = Buffer.alloc(4);
        increment.writeUInt32BE(MAX_WINDOW - DEFAULT_WINDOW);
        socket.write(
          Buffer.concat([PREFACE, frame(SETTINGS, 0, 0, settings), frame(WINDOW_UPDATE, 0, 0, increment)]),
        );
        resolve(connection);
      });
    });
  }

  /** Sends one unary call with this gRPC-framed body; `done` is called once, when its stream has ended. */
  call(body: Buffer, done: CallDone): void {
    if (this.#failed !== undefined) {
      done(false, this.#failed);
      return;
    }
    if (body.length > this.#maxFrame || body.length > this.#streamWindow) {
      done(false, `a body of ${body.length} bytes needs more than one DATA frame`);
      return;
    }
    if (this.#waiting.length > 0 || body.length > this.#sendWindow) {
      this.#waiting.push({ body, done });
      return;
    }
    this.#send(body, done);
  }

  close(): void {
    this.#failed ??= "closed";
    this.#socket.destroy();
  }

  #send(body: Buffer, done: CallDone): void {
    const stream = this.#nextStream;
    this.#nextStream += 2;
    this.#sendWindow -= body.length;
    this.#calls.set(stream, { done, message: false });
    const block = this.#headerBlock;
    const bytes = Buffer.allocUnsafe(18 + block.length + body.length);
    putFrame(bytes, putFrame(bytes, 0, HEADERS, END_HEADERS, stream, block), DATA, END_STREAM, stream, body);
    this.#write(bytes);
  }

  #write(bytes: Buffer): void {
    this.#out.push(bytes);
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    queueMicrotask(() => {
      this.#flushScheduled = false;
      const out = this.#out;
      this.#out = [];
      if (this.#failed === undefined)
        this.#socket.write(out.length === 1 ? (out[0] as Buffer) : Buffer.concat(out));
    });
  }

  #read(chunk: Buffer): void {
    let input = this.#input === undefined ? chunk : Buffer.concat([this.#input, chunk]);
    let at = 0;
    while (input.length - at >= 9) {
      const length = input.readUIntBE(at, 3);
      if (input.length - at < 9 + length) break;
      const type = input[at + 3] as number;
      const flags = input[at + 4] as number;
      const stream = input.readUInt32BE(at + 5) & 0x7fffffff;
      this.#frame(type, flags, stream, input, at + 9, length);
      at += 9 + length;
    }
    if (at < input.length) {
      input = input.subarray(at);
      this.#input = input;
    } else {
      this.#input = undefined;
    }
  }

  #frame(type: number, flags: number, stream: number, input: Buffer, at: number, length: number): void {
    switch (type) {
      case DATA: {
        const call = this.#calls.get(stream);
        // One whole gRPC message: the uncompressed flag and its length, then that many bytes.
        if (call && length >= 5 && input[at] === 0 && input.readUInt32BE(at + 1) === length - 5) {
          call.message = true;
        }
        this.#received += length;
        if (this.#received >= WINDOW_REFILL) {
          const increment = Buffer.allocUnsafe(4);
          increment.writeUInt32BE(this.#received);
          this.#received = 0;
          this.#write(frame(WINDOW_UPDATE, 0, 0, increment));
        }
        if (flags & END_STREAM) this.#end(stream, false, "the answer ended without trailers");
        return;
      }
      case HEADERS:
        // The response head, or the trailers (END_STREAM): only where the stream ends matters here.
        if (flags & END_STREAM) {
          const call = this.#calls.get(stream);
          this.#end(stream, call?.message === true, "trailers-only answer (an error status)");
        }
        return;
      case RST_STREAM:
        this.#end(stream, false, `stream reset (error code ${input.readUInt32BE(at)})`);
        return;
      case SETTINGS:
        if (flags & ACK) return;
        for (let i = at; i + 6 <= at + length; i += 6) {
          const id = input.readUInt16BE(i);
          const value = input.readUInt32BE(i + 2);
          if (id === SETTINGS_INITIAL_WINDOW_SIZE) this.#streamWindow = value;
          if (id === SETTINGS_MAX_FRAME_SIZE) this.#maxFrame = value;
        }
        this.#write(frame(SETTINGS, ACK, 0, Buffer.alloc(0)));
        return;
      case PING:
        if (!(flags & ACK)) this.#write(frame(PING, ACK, 0, input.subarray(at, at + 8)));
        return;
      case WINDOW_UPDATE:
        if (stream === 0) {
          this.#sendWindow += input.readUInt32BE(at) & 0x7fffffff;
          while (this.#waiting.length > 0 && (this.#waiting[0]?.body.length ?? 0) <= this.#sendWindow) {
            const next = this.#waiting.shift() as { body: Buffer; done: CallDone };
            this.#send(next.body, next.done);
          }
        }
        return;
      case GOAWAY:
        this.#fail(`GOAWAY (error code ${input.readUInt32BE(at + 4)})`);
        return;
      default:
        // PRIORITY, PUSH_PROMISE (disabled), CONTINUATION (header blocks are not read): nothing to do.
        return;
    }
  }

  #end(stream: number, ok: boolean, why: string): void {
    const call = this.#calls.get(stream);
    if (!call) return;
    this.#calls.delete(stream);
    call.done(ok, ok ? "" : why);
  }

  #fail(why: string): void {
    if (this.#failed !== undefined) return;
    this.#failed = why;
    const calls = [...this.#calls.values(), ...this.#waiting];
    this.#calls.clear();
    this.#waiting = [];
    for (const call of calls) call.done(false, why);
    this.#socket.destroy();
  }
}
