// Our connect-node adapter: what connectNodeAdapter does (route by path to connect-es's universal handlers,
// answer with node:http), plus one correction. connect-es answers a request body that is not valid
// protobuf with INTERNAL "parse binary: <decoder detail>": a client's bad input reported as our fault, with a
// library message. Here it is INVALID_ARGUMENT "request message is malformed", as on the gRPC listener, in
// each protocol's own shape (Connect unary JSON, Connect end-stream message, gRPC-Web trailers).

import type { IncomingMessage, ServerResponse } from "node:http";
import {
  Code,
  ConnectError,
  type ConnectRouterOptions,
  type ContextValues,
  createConnectRouter,
} from "@connectrpc/connect";
import type { UniversalHandler, UniversalServerResponse } from "@connectrpc/connect/protocol";
import {
  compressionBrotli,
  compressionGzip,
  universalRequestFromNodeRequest,
  universalResponseToNodeResponse,
} from "@connectrpc/connect-node";

export const MALFORMED_MESSAGE = "request message is malformed";

export interface ConnectAdapterOptions extends ConnectRouterOptions {
  routes(router: ReturnType<typeof createConnectRouter>): void;
  contextValues?: (request: IncomingMessage) => ContextValues;
  /** A handler that failed after its answer started (the client went away, mostly): for the log. */
  onHandlerError(reason: unknown, handler: UniversalHandler): void;
  /** Called for each request rejected as malformed (connect-es parses before interceptors run). */
  onMalformed?(handler: UniversalHandler, request: IncomingMessage): void;
}

/** The request handler; it returns false for a path no route serves, so the caller can answer it. */
export function createConnectAdapter(
  options: ConnectAdapterOptions,
): (request: IncomingMessage, response: ServerResponse, path: string) => boolean {
  const router = createConnectRouter({ acceptCompression: [compressionGzip, compressionBrotli], ...options });
  options.routes(router);
  const handlers = new Map<string, UniversalHandler>();
  for (const handler of router.handlers) handlers.set(handler.requestPath, handler);
  return (request, response, path) => {
    const handler = handlers.get(path);
    if (!handler) return false;
    const universal = universalRequestFromNodeRequest(
      request,
      response,
      undefined,
      options.contextValues?.(request),
    );
    handler(universal)
      .then((answer) => {
        const corrected = correctMalformed(answer, () => options.onMalformed?.(handler, request));
        return universalResponseToNodeResponse(corrected, response);
      })
      .catch((reason: unknown) => {
        if (ConnectError.from(reason).code !== Code.Aborted) options.onHandlerError(reason, handler);
      });
    return true;
  };
}

const PARSE_BINARY = "parse binary:";
const CONNECT_END_STREAM = 0b0000_0010;
const GRPC_WEB_TRAILER = 0b1000_0000;
const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** Rewrites a parse failure in `answer` to INVALID_ARGUMENT; anything else passes through untouched. */
export function correctMalformed(
  answer: UniversalServerResponse,
  onCorrected: () => void,
): UniversalServerResponse {
  const body = answer.body;
  if (body === undefined) return answer;
  const contentType = answer.header?.get("content-type") ?? "";
  if (answer.status !== 200) {
    // Connect unary errors: a JSON body, the HTTP status derived from the code.
    if (answer.status !== 500 || !contentType.startsWith("application/json")) return answer;
    // The length changes with the message: let node:http frame the body itself.
    const header = new Headers(answer.header);
    header.delete("content-length");
    const corrected: UniversalServerResponse = { ...answer, header };
    corrected.body = rewriteUnaryError(body, corrected, onCorrected);
    return corrected;
  }
  if (!contentType.startsWith("application/connect+") && !contentType.startsWith("application/grpc-web")) {
    return answer;
  }
  return { ...answer, body: rewriteEnvelopes(body, onCorrected) };
}

async function* rewriteUnaryError(
  body: AsyncIterable<Uint8Array>,
  answer: UniversalServerResponse,
  onCorrected: () => void,
): AsyncIterable<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of body) chunks.push(chunk);
  const bytes = Buffer.concat(chunks);
  const error = parseJson(bytes) as { code?: unknown; message?: unknown } | undefined;
  if (
    error?.code === "internal" &&
    typeof error.message === "string" &&
    error.message.startsWith(PARSE_BINARY)
  ) {
    onCorrected();
    // The status line is not written yet: universalResponseToNodeResponse reads the status after the body starts.
    answer.status = 400;
    yield encoder.encode(JSON.stringify({ code: "invalid_argument", message: MALFORMED_MESSAGE }));
    return;
  }
  yield bytes;
}

/** Streams: only an end-of-stream envelope (Connect) or a trailer frame (gRPC-Web) can carry the error. */
async function* rewriteEnvelopes(
  body: AsyncIterable<Uint8Array>,
  onCorrected: () => void,
): AsyncIterable<Uint8Array> {
  for await (const chunk of body) {
    const flags = chunk[0];
    if (chunk.length < 5 || (flags !== CONNECT_END_STREAM && flags !== GRPC_WEB_TRAILER)) {
      yield chunk;
      continue;
    }
    const length = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).readUInt32BE(1);
    const text = length === chunk.length - 5 ? decoder.decode(chunk.subarray(5)) : "";
    let replacement: string | undefined;
    if (flags === CONNECT_END_STREAM) {
      const end = parseJson(text) as { error?: { code?: unknown; message?: unknown } } | undefined;
      const message = end?.error?.message;
      if (
        end?.error?.code === "internal" &&
        typeof message === "string" &&
        message.startsWith(PARSE_BINARY)
      ) {
        replacement = JSON.stringify({
          ...end,
          error: { code: "invalid_argument", message: MALFORMED_MESSAGE },
        });
      }
    } else if (/^grpc-status: 13\r?$/m.test(text) && /^grpc-message: parse%20binary%3A/m.test(text)) {
      replacement = `grpc-status: 3\r\ngrpc-message: ${encodeURIComponent(MALFORMED_MESSAGE)}\r\n`;
    }
    if (replacement === undefined) {
      yield chunk;
      continue;
    }
    onCorrected();
    const payload = encoder.encode(replacement);
    const envelope = Buffer.alloc(5 + payload.length);
    envelope.writeUInt8(flags, 0);
    envelope.writeUInt32BE(payload.length, 1);
    envelope.set(payload, 5);
    yield envelope;
  }
}

function parseJson(value: Uint8Array | string): unknown {
  try {
    return JSON.parse(typeof value === "string" ? value : decoder.decode(value));
  } catch {
    return undefined;
  }
}
