// The real service for end-to-end tests: startApp on port 0 over a SQLite file or a PostgreSQL database,
// a real @grpc/grpc-js client for AuthzService built from the protobuf-es DescService, and a separate
// plain-SQL connection to the same database (what FLIP's Python API or an operator would use).

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
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
import pg from "pg";
import { type App, startApp } from "../../src/app.ts";
import { type Env, loadConfig } from "../../src/config.ts";
import { createLogger } from "../../src/logger.ts";
import { methodPath } from "../../src/rpc/method-name.ts";
import { createTestDatabase, type TestDatabase } from "./postgres.ts";

export type Row = Record<string, unknown>;

/** A database for one test file, with its own plain-SQL connection (placeholders written as `?`). */
export interface AppDatabase {
  kind: "sqlite" | "postgres";
  /** The DATABASE_URL the app is given. */
  url: string;
  /** Present for PostgreSQL: the test database's name and admin handle. */
  pg?: TestDatabase;
  sql(query: string, params?: (string | number | null)[]): Promise<Row[]>;
  close(): Promise<void>;
}

export async function createSqliteDatabase(): Promise<AppDatabase> {
  const dir = mkdtempSync(join(tmpdir(), "authz-rpc-"));
  const path = join(dir, "authz.db");
  let db: DatabaseSync | undefined;
  const open = () => {
    if (!db) {
      db = new DatabaseSync(path);
      db.exec("PRAGMA busy_timeout = 5000");
    }
    return db;
  };
  return {
    kind: "sqlite",
    url: `sqlite:${path}`,
    async sql(query, params = []) {
      const statement = open().prepare(query);
      if (/^\s*(select|with)\b/i.test(query) || /\breturning\b/i.test(query)) {
        return statement.all(...params) as Row[];
      }
      statement.run(...params);
      return [];
    },
    async close() {
      db?.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function createPostgresDatabase(): Promise<AppDatabase> {
  const database = await createTestDatabase("authz_rpc");
  const pool = new pg.Pool({ connectionString: database.url, max: 2 });
  pool.on("error", () => {});
  return {
    kind: "postgres",
    url: database.url,
    pg: database,
    async sql(query, params = []) {
      let n = 0;
      const text = query.replace(/\?/g, () => `$${++n}`);
      const result = await pool.query(text, params);
      return result.rows as Row[];
    },
    async close() {
      await pool.end().catch(() => {});
      await database.drop();
    },
  };
}

/** A gRPC status as a client sees it. */
export interface RpcStatus {
  code: grpc.status;
  details: string;
}

export interface AuthzClient {
  /** A unary call; rejects with the grpc ServiceError (code, details). */
  call<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    input: MessageInitShape<I>,
  ): Promise<MessageShape<O>>;
  /** A unary call expected to fail: resolves to its status; rejects when it succeeds. */
  fail<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    input: MessageInitShape<I>,
  ): Promise<RpcStatus>;
  /** A server stream; cancel() it when done. */
  stream<I extends DescMessage, O extends DescMessage>(
    method: DescMethodServerStreaming<I, O>,
    input: MessageInitShape<I>,
  ): grpc.ClientReadableStream<MessageShape<O>>;
  close(): void;
}

export function createAuthzClient(target: string): AuthzClient {
  const client = new grpc.Client(target, grpc.credentials.createInsecure());
  const call = <I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    input: MessageInitShape<I>,
  ) =>
    new Promise<MessageShape<O>>((resolve, reject) => {
      client.makeUnaryRequest(
        methodPath(method),
        (value: MessageShape<I>) => Buffer.from(toBinary(method.input, value)),
        (bytes: Buffer) => fromBinary(method.output, bytes),
        create(method.input, input),
        new grpc.Metadata(),
        { deadline: Date.now() + 20_000 },
        (error, value) => (error ? reject(error) : resolve(value as MessageShape<O>)),
      );
    });
  return {
    call,
    async fail(method, input) {
      let value: unknown;
      try {
        value = await call(method, input);
      } catch (error) {
        const status = error as grpc.ServiceError;
        return { code: status.code, details: status.details };
      }
      throw new Error(`${method.name} succeeded but was expected to fail: ${JSON.stringify(value)}`);
    },
    stream(method, input) {
      return client.makeServerStreamRequest(
        methodPath(method),
        (value: MessageShape<typeof method.input>) => Buffer.from(toBinary(method.input, value)),
        (bytes: Buffer) => fromBinary(method.output, bytes),
        create(method.input, input),
        new grpc.Metadata(),
        {},
      );
    },
    close() {
      client.close();
    },
  };
}

/** Reads a server stream until `count` messages arrived (or the timeout passes), then cancels it. */
export function take<T>(
  stream: grpc.ClientReadableStream<T>,
  count: number,
  timeoutMs = 5000,
): Promise<{ messages: T[]; error?: RpcStatus }> {
  return new Promise((resolve) => {
    const messages: T[] = [];
    let done = false;
    const finish = (error?: RpcStatus) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      stream.cancel();
      resolve(error ? { messages, error } : { messages });
    };
    const timer = setTimeout(() => finish(), timeoutMs);
    stream.on("data", (message: T) => {
      messages.push(message);
      if (messages.length >= count) finish();
    });
    stream.on("error", (error: grpc.ServiceError) => {
      if (error.code === grpc.status.CANCELLED && done) return;
      finish({ code: error.code, details: error.details });
    });
    stream.on("end", () => finish());
  });
}

export interface TestApp {
  app: App;
  client: AuthzClient;
  grpcTarget: string;
  httpBase: string;
  close(): Promise<void>;
}

/** Starts the real app (open mode, loopback, port 0) on `databaseUrl`; extra env overrides the defaults. */
export async function startTestApp(databaseUrl: string, env: Env = {}): Promise<TestApp> {
  const config = loadConfig({
    DATABASE_URL: databaseUrl,
    AUTHZ_GRPC_LISTEN: "127.0.0.1:0",
    AUTHZ_HTTP_LISTEN: "127.0.0.1:0",
    AUTHZ_LOG_LEVEL: "silent",
    AUTHZ_SHUTDOWN_GRACE_MS: "1000",
    ...env,
  });
  const app = await startApp(config, createLogger("silent"));
  const grpcTarget = `127.0.0.1:${app.grpcPort}`;
  const client = createAuthzClient(grpcTarget);
  return {
    app,
    client,
    grpcTarget,
    httpBase: `http://127.0.0.1:${app.httpPort}`,
    async close() {
      client.close();
      await app.shutdown();
    },
  };
}

/** Polls `probe` every 10 ms until it returns true; rejects after `timeoutMs`. Resolves to the time taken. */
export async function eventually(probe: () => Promise<boolean>, timeoutMs = 2000): Promise<number> {
  const start = Date.now();
  for (;;) {
    if (await probe()) return Date.now() - start;
    if (Date.now() - start > timeoutMs) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
