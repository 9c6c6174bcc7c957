// The real app with credentials for security tests: startApp on port 0 with service tokens, a JWKS file of
// real RSA and EC keys and optional TLS, its pino log captured; and one client interface over both
// listeners (gRPC through @grpc/grpc-js, Connect JSON over node:http(s)) that returns what a user sees:
// the status code and message, or the answer as proto JSON.

import { request as httpRequest, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import {
  create,
  type DescMessage,
  type DescMethodServerStreaming,
  type DescMethodUnary,
  fromBinary,
  type JsonValue,
  type MessageInitShape,
  type MessageShape,
  toBinary,
  toJson,
} from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { type App, startApp } from "../../src/app.ts";
import { type Env, loadConfig } from "../../src/config.ts";
import { createLogger } from "../../src/logger.ts";
import { methodPath } from "../../src/rpc/method-name.ts";
import { createTestKey, jwksOf, type TestKey, writeTempFile } from "./keys.ts";

export const S = grpc.status;

/** What a caller sees: code OK with the answer as proto JSON, or a status code and its message. */
export interface Outcome {
  code: grpc.status;
  message: string;
  body?: JsonValue;
  /** Connect only: the HTTP status of the answer. */
  httpStatus?: number;
}

export interface CallOptions {
  /** The `authorization` header value; absent = no header. */
  authorization?: string;
  /** Deadline in ms from now (grpc-timeout / connect-timeout-ms). Default 20 s. */
  timeoutMs?: number;
}

/** A server stream as seen by a caller: the messages as they come, then how it ended. */
export interface StreamOutcome {
  /** Resolves with the next message as proto JSON, or with the end (code OK or an error) when none. */
  next(timeoutMs?: number): Promise<{ message: JsonValue } | { end: Outcome } | { timeout: true }>;
  close(): void;
}

export interface ListenerClient {
  readonly name: "grpc" | "connect";
  unary<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    input: MessageInitShape<I>,
    options?: CallOptions,
  ): Promise<Outcome>;
  stream<I extends DescMessage, O extends DescMessage>(
    method: DescMethodServerStreaming<I, O>,
    input: MessageInitShape<I>,
    options?: CallOptions,
  ): StreamOutcome;
  close(): void;
}

/** Client TLS: trust `ca`; present `cert`/`key` for mutual TLS. */
export interface ClientTls {
  ca: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

/** A queue of stream events, read one at a time. */
function eventQueue() {
  const events: ({ message: JsonValue } | { end: Outcome })[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  return {
    push(event: { message: JsonValue } | { end: Outcome }) {
      if (ended) return;
      if ("end" in event) ended = true;
      events.push(event);
      wake?.();
    },
    async next(timeoutMs = 5000): Promise<{ message: JsonValue } | { end: Outcome } | { timeout: true }> {
      const deadline = Date.now() + timeoutMs;
      while (events.length === 0) {
        const left = deadline - Date.now();
        if (left <= 0) return { timeout: true };
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, left);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        wake = undefined;
      }
      return events.shift() as { message: JsonValue } | { end: Outcome };
    },
  };
}

/** A real @grpc/grpc-js client for the gRPC listener; h2c, or TLS when `tls` is given. */
export function createGrpcClient(target: string, tls?: ClientTls): ListenerClient {
  const credentials = tls
    ? grpc.credentials.createSsl(tls.ca, tls.key ?? null, tls.cert ?? null)
    : grpc.credentials.createInsecure();
  const client = new grpc.Client(target, credentials);
  const metadataOf = (options: CallOptions) => {
    const metadata = new grpc.Metadata();
    if (options.authorization !== undefined) metadata.set("authorization", options.authorization);
    return metadata;
  };
  return {
    name: "grpc",
    unary(method, input, options = {}) {
      return new Promise((resolve) => {
        client.makeUnaryRequest(
          methodPath(method),
          (value: MessageShape<typeof method.input>) => Buffer.from(toBinary(method.input, value)),
          (bytes: Buffer) => fromBinary(method.output, bytes),
          create(method.input, input),
          metadataOf(options),
          { deadline: Date.now() + (options.timeoutMs ?? 20_000) },
          (error, value) => {
            if (error) resolve({ code: error.code, message: error.details });
            else
              resolve({
                code: S.OK,
                message: "",
                body: toJson(method.output, value as MessageShape<typeof method.output>),
              });
          },
        );
      });
    },
    stream(method, input, options = {}) {
      const queue = eventQueue();
      const call = client.makeServerStreamRequest(
        methodPath(method),
        (value: MessageShape<typeof method.input>) => Buffer.from(toBinary(method.input, value)),
        (bytes: Buffer) => fromBinary(method.output, bytes),
        create(method.input, input),
        metadataOf(options),
        options.timeoutMs === undefined ? {} : { deadline: Date.now() + options.timeoutMs },
      );
      call.on("data", (message: MessageShape<typeof method.output>) =>
        queue.push({ message: toJson(method.output, message) }),
      );
      call.on("error", (error: grpc.ServiceError) =>
        queue.push({ end: { code: error.code, message: error.details } }),
      );
      call.on("end", () => queue.push({ end: { code: S.OK, message: "" } }));
      return { next: queue.next, close: () => call.cancel() };
    },
    close() {
      client.close();
    },
  };
}

/** Connect error code names (as in JSON error bodies) → gRPC status codes. */
export function connectCode(name: string): grpc.status {
  const code = (grpc.status as unknown as Record<string, number>)[name.toUpperCase()];
  if (code === undefined) throw new Error(`unknown Connect code ${name}`);
  return code;
}

export interface RawResponse {
  status: number;
  headers: IncomingMessage["headers"];
  body: Buffer;
}

/** One HTTP(S) request; rejects on a transport failure (refused handshake, reset). */
export function rawRequest(
  url: string,
  options: { method?: string; headers?: Record<string, string>; body?: Buffer | string; tls?: ClientTls },
): Promise<RawResponse> {
  const target = new URL(url);
  const send = target.protocol === "https:" ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = send(
      target,
      {
        method: options.method ?? "GET",
        headers: options.headers,
        agent: false,
        ...(options.tls && { ca: options.tls.ca, cert: options.tls.cert, key: options.tls.key }),
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("end", () =>
          resolve({
            status: response.statusCode ?? 0,
            headers: response.headers,
            body: Buffer.concat(chunks),
          }),
        );
        response.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(options.body);
  });
}

/** A client for the HTTP listener speaking the Connect protocol with JSON (http://, or https:// with `tls`). */
export function createConnectClient(base: string, tls?: ClientTls): ListenerClient {
  const headersOf = (options: CallOptions, contentType: string) => {
    const headers: Record<string, string> = { "content-type": contentType, "connect-protocol-version": "1" };
    if (options.authorization !== undefined) headers.authorization = options.authorization;
    if (options.timeoutMs !== undefined) headers["connect-timeout-ms"] = String(options.timeoutMs);
    return headers;
  };
  return {
    name: "connect",
    async unary(method, input, options = {}) {
      const response = await rawRequest(`${base}${methodPath(method)}`, {
        method: "POST",
        headers: headersOf(options, "application/json"),
        body: JSON.stringify(toJson(method.input, create(method.input, input))),
        ...(tls && { tls }),
      });
      const text = response.body.toString("utf8");
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch {
        throw new Error(`HTTP ${response.status} answered non-JSON: ${text.slice(0, 200)}`);
      }
      if (response.status === 200)
        return { code: S.OK, message: "", body: json as JsonValue, httpStatus: 200 };
      const error = json as { code: string; message?: string };
      return { code: connectCode(error.code), message: error.message ?? "", httpStatus: response.status };
    },
    stream(method, input, options = {}) {
      const queue = eventQueue();
      const target = new URL(`${base}${methodPath(method)}`);
      const send = target.protocol === "https:" ? httpsRequest : httpRequest;
      const body = Buffer.from(JSON.stringify(toJson(method.input, create(method.input, input))));
      const envelope = Buffer.alloc(5 + body.length);
      envelope.writeUInt8(0, 0);
      envelope.writeUInt32BE(body.length, 1);
      body.copy(envelope, 5);
      const req = send(
        target,
        {
          method: "POST",
          headers: headersOf(options, "application/connect+json"),
          agent: false,
          ...(tls && { ca: tls.ca, cert: tls.cert, key: tls.key }),
        },
        (response) => {
          if (response.statusCode !== 200) {
            const chunks: Buffer[] = [];
            response.on("data", (chunk: Buffer) => chunks.push(chunk));
            response.on("end", () => {
              const text = Buffer.concat(chunks).toString("utf8");
              let error: { code: string; message?: string };
              try {
                error = JSON.parse(text) as { code: string; message?: string };
              } catch {
                error = { code: "unknown", message: `HTTP ${response.statusCode}: ${text.slice(0, 200)}` };
              }
              queue.push({
                end: {
                  code: connectCode(error.code),
                  message: error.message ?? "",
                  httpStatus: response.statusCode,
                },
              });
            });
            return;
          }
          let pending = Buffer.alloc(0);
          response.on("data", (chunk: Buffer) => {
            pending = Buffer.concat([pending, chunk]);
            while (pending.length >= 5) {
              const flags = pending.readUInt8(0);
              const length = pending.readUInt32BE(1);
              if (pending.length < 5 + length) break;
              const payload = JSON.parse(pending.subarray(5, 5 + length).toString("utf8")) as JsonValue;
              pending = pending.subarray(5 + length);
              if (flags & 0x02) {
                const error = (payload as { error?: { code: string; message?: string } }).error;
                queue.push({
                  end: error
                    ? { code: connectCode(error.code), message: error.message ?? "", httpStatus: 200 }
                    : { code: S.OK, message: "", httpStatus: 200 },
                });
              } else {
                queue.push({ message: payload });
              }
            }
          });
          response.on("error", () => {});
          response.on("end", () =>
            queue.push({ end: { code: S.UNKNOWN, message: "stream ended without an end message" } }),
          );
        },
      );
      req.on("error", (error) => queue.push({ end: { code: S.UNAVAILABLE, message: error.message } }));
      req.end(envelope);
      return { next: queue.next, close: () => req.destroy() };
    },
    close() {},
  };
}

/** The keys of the test user pool: two RSA keys (rotation) and one EC key, all in the JWKS file. */
export interface TestPool {
  rsa: TestKey;
  rsaNext: TestKey;
  ec: TestKey;
  /** A key the pool never published. */
  stranger: TestKey;
  jwksFile: string;
}

export async function createTestPool(): Promise<TestPool> {
  const [rsa, rsaNext, ec, stranger] = await Promise.all([
    createTestKey("RS256"),
    createTestKey("RS256"),
    createTestKey("ES256"),
    createTestKey("RS256"),
  ]);
  return { rsa, rsaNext, ec, stranger, jwksFile: writeTempFile("jwks.json", jwksOf(rsa, rsaNext, ec)) };
}

export interface SecureApp {
  app: App;
  grpcTarget: string;
  httpBase: string;
  /** Every line the app logged so far (pino JSON). */
  logs: string[];
  close(): Promise<void>;
}

/** Starts the real app on 127.0.0.1 port 0 with `env` over the defaults, logging at `env.AUTHZ_LOG_LEVEL`. */
export async function startSecureApp(databaseUrl: string, env: Env): Promise<SecureApp> {
  const config = loadConfig({
    DATABASE_URL: databaseUrl,
    AUTHZ_GRPC_LISTEN: "127.0.0.1:0",
    AUTHZ_HTTP_LISTEN: "127.0.0.1:0",
    AUTHZ_SHUTDOWN_GRACE_MS: "1000",
    ...env,
  });
  const logs: string[] = [];
  const logger = createLogger(config.logLevel, { write: (line: string) => void logs.push(line) });
  const app = await startApp(config, logger);
  const scheme = config.tls ? "https" : "http";
  return {
    app,
    grpcTarget: `127.0.0.1:${app.grpcPort}`,
    httpBase: `${scheme}://127.0.0.1:${app.httpPort}`,
    logs,
    close: () => app.shutdown(),
  };
}

/** Both listeners of `app`, same credentials. */
export function bothListeners(app: SecureApp, tls?: ClientTls): ListenerClient[] {
  return [createGrpcClient(app.grpcTarget, tls), createConnectClient(app.httpBase, tls)];
}
