// A real AuthzService implementation for transport tests (echoes, throws each ConnectError code, streams),
// a server started on port 0 around it, and a real @grpc/grpc-js client built from the same DescService.

import type { IncomingMessage } from "node:http";
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
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  Code,
  ConnectError,
  type ContextValues,
  type Interceptor,
  type ServiceImpl,
} from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { AuthzService, ChangeKind } from "../../gen/flip/authz/v1/authz_pb.ts";
import { methodPath } from "../../src/rpc/method-name.ts";
import type { GrpcServerCall } from "../../src/server/grpc.ts";
import { createHealthState, type HealthState } from "../../src/server/health.ts";
import { type RunningServers, startServers } from "../../src/server/listen.ts";
import type { ServerLogger } from "../../src/server/outcome.ts";

/** What the test implementation saw, for assertions about signals and generators. */
export interface Probe {
  streamFinished: number;
  streamYielded: number;
  aborted: string[];
  timeouts: (number | undefined)[];
  startedSlow: number;
  completedSlow: number;
}

export function createProbe(): Probe {
  return { streamFinished: 0, streamYielded: 0, aborted: [], timeouts: [], startedSlow: 0, completedSlow: 0 };
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(signal.reason);
      },
      { once: true },
    );
  });
}

/**
 * CheckPermission's user_id drives it: "code:<n>" throws ConnectError(n, "failure <n>: detail"),
 * "plain-error" throws a plain Error carrying "secret", "sleep:<ms>" waits (watching the signal).
 * On success it echoes: granted_by = [permission], checked_at = the authorization header.
 * WatchChanges' `after`: "count:<n>" yields n changes; "endless" yields until stopped; "fail:<n>" throws
 * NOT_FOUND after n; "ignore-signal" yields every 20 ms and ignores the signal.
 * ListAuditEvents is left out (UNIMPLEMENTED).
 */
export function createTestService(probe: Probe): Partial<ServiceImpl<typeof AuthzService>> {
  return {
    async checkPermission(request, context) {
      probe.timeouts.push(context.timeoutMs());
      const [kind, arg] = request.userId.split(":");
      if (kind === "code") throw new ConnectError(`failure ${arg}: detail`, Number(arg) as Code);
      if (kind === "long") throw new ConnectError("x".repeat(Number(arg)), Code.NotFound);
      if (kind === "plain-error") throw new Error("secret: SELECT * FROM users failed at db.internal:5432");
      if (kind === "sleep") {
        try {
          await sleep(Number(arg), context.signal);
        } catch (error) {
          probe.aborted.push(String(error));
          throw error;
        }
      }
      return {
        allowed: true,
        grantedBy: [request.permission],
        checkedAt: context.requestHeader.get("authorization") ?? "",
      };
    },
    async updateProfile(request) {
      probe.startedSlow++;
      await sleep(300);
      probe.completedSlow++;
      return { profile: { userId: request.userId, name: request.name ?? "" } };
    },
    getProfile(request) {
      const at = new Date("2026-01-02T03:04:05.000Z");
      return {
        profile: {
          userId: request.userId.toLowerCase(),
          name: "Ada",
          organisation: "FLIP",
          roles: ["Admin"],
          permissions: ["CAN_MANAGE_USERS"],
          createdAt: timestampFromDate(at),
          updatedAt: timestampFromDate(at),
        },
      };
    },
    listRoles() {
      return { roles: [{ id: "r1", name: "Admin", description: "all", permissions: ["CAN_MANAGE_USERS"] }] };
    },
    async *watchChanges(request, context) {
      const [kind, arg] = request.after.split(":");
      try {
        if (kind === "count" || kind === "fail") {
          for (let i = 0; i < Number(arg); i++) {
            probe.streamYielded++;
            yield { revision: String(i), kind: ChangeKind.USER_ROLES, userId: `u${i}` };
          }
          if (kind === "fail") throw new ConnectError("no such revision", Code.NotFound);
          return;
        }
        for (let i = 0; ; i++) {
          if (kind !== "ignore-signal" && context.signal.aborted) return;
          probe.streamYielded++;
          yield { revision: String(i), kind: ChangeKind.PROFILE, userId: "x".repeat(1000) };
          if (kind === "ignore-signal") await sleep(20);
        }
      } finally {
        probe.streamFinished++;
      }
    },
  };
}

export interface LogEntry {
  level: string;
  obj: object;
  msg?: string;
}

export function createLogger(entries: LogEntry[]): ServerLogger {
  const log = (level: string) => (obj: object, msg?: string) => {
    entries.push({ level, obj, msg });
  };
  return { error: log("error"), warn: log("warn"), info: log("info") };
}

export interface Fixture {
  servers: RunningServers;
  health: HealthState;
  probe: Probe;
  logs: LogEntry[];
  client: grpc.Client;
  grpcTarget: string;
  httpBase: string;
  close(): Promise<void>;
}

export async function startFixture(
  options: {
    interceptors?: Interceptor[];
    maxBytes?: number;
    serving?: boolean;
    grpcContextValues?: (call: GrpcServerCall) => ContextValues;
    httpContextValues?: (request: IncomingMessage) => ContextValues;
  } = {},
): Promise<Fixture> {
  const probe = createProbe();
  const logs: LogEntry[] = [];
  const health = createHealthState([AuthzService.typeName]);
  if (options.serving ?? true) health.setAll("SERVING");
  const servers = await startServers({
    service: AuthzService,
    impl: createTestService(probe),
    health,
    logger: createLogger(logs),
    interceptors: options.interceptors,
    grpc: {
      host: "127.0.0.1",
      port: 0,
      maxReceiveMessageBytes: options.maxBytes,
      contextValues: options.grpcContextValues,
    },
    http: {
      host: "127.0.0.1",
      port: 0,
      readMaxBytes: options.maxBytes,
      contextValues: options.httpContextValues,
    },
  });
  const grpcTarget = `127.0.0.1:${servers.grpcPort}`;
  const client = new grpc.Client(grpcTarget, grpc.credentials.createInsecure());
  return {
    servers,
    health,
    probe,
    logs,
    client,
    grpcTarget,
    httpBase: `http://127.0.0.1:${servers.httpPort}`,
    async close() {
      client.close();
      await servers.shutdown(1000);
    },
  };
}

function serializer<T extends DescMessage>(schema: T) {
  return (value: MessageShape<T>) => Buffer.from(toBinary(schema, value));
}

function deserializer<T extends DescMessage>(schema: T) {
  return (bytes: Buffer) => fromBinary(schema, bytes);
}

export interface CallOptions {
  metadata?: Record<string, string>;
  deadlineMs?: number;
}

function toMetadata(values: Record<string, string> = {}): grpc.Metadata {
  const metadata = new grpc.Metadata();
  for (const [key, value] of Object.entries(values)) metadata.set(key, value);
  return metadata;
}

function callOptions(options: CallOptions): grpc.CallOptions {
  return options.deadlineMs === undefined ? {} : { deadline: Date.now() + options.deadlineMs };
}

/** A unary call through the real grpc-js client; rejects with the grpc ServiceError. */
export function unary<I extends DescMessage, O extends DescMessage>(
  client: grpc.Client,
  method: DescMethodUnary<I, O>,
  input: MessageInitShape<I>,
  options: CallOptions = {},
): Promise<MessageShape<O>> {
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(
      methodPath(method),
      serializer(method.input),
      deserializer(method.output),
      create(method.input, input),
      toMetadata(options.metadata),
      callOptions(options),
      (error, value) => (error ? reject(error) : resolve(value as MessageShape<O>)),
    );
  });
}

/** A unary call with raw request bytes (e.g. garbage), answer undecoded. */
export function rawUnary(client: grpc.Client, methodPath: string, bytes: Uint8Array): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(
      methodPath,
      (value: Buffer) => value,
      (value: Buffer) => value,
      Buffer.from(bytes),
      new grpc.Metadata(),
      {},
      (error, value) => (error ? reject(error) : resolve(value as Buffer)),
    );
  });
}

export function serverStream<I extends DescMessage, O extends DescMessage>(
  client: grpc.Client,
  method: DescMethodServerStreaming<I, O>,
  input: MessageInitShape<I>,
  options: CallOptions = {},
): grpc.ClientReadableStream<MessageShape<O>> {
  return client.makeServerStreamRequest(
    methodPath(method),
    serializer(method.input),
    deserializer(method.output),
    create(method.input, input),
    toMetadata(options.metadata),
    callOptions(options),
  );
}

/** Collects a server stream: the messages, then the final status (code 0 when OK). */
export function collect<T>(
  stream: grpc.ClientReadableStream<T>,
): Promise<{ messages: T[]; error?: grpc.ServiceError }> {
  return new Promise((resolve) => {
    const messages: T[] = [];
    stream.on("data", (message: T) => messages.push(message));
    stream.on("error", (error: grpc.ServiceError) => resolve({ messages, error }));
    stream.on("end", () => resolve({ messages }));
  });
}

export async function until(condition: () => boolean, timeoutMs = 3000): Promise<void> {
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > timeoutMs) throw new Error("condition not met in time");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
