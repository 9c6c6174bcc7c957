// flip-authz behind a real PgBouncer in transaction pooling mode. With AUTHZ_LISTEN_DATABASE_URL (a direct
// session for LISTEN) the service migrates, serves checks and writes through the pooler and its caches follow
// plain-SQL writes by notification. Without it the broken LISTEN is detected at start, named in the log,
// /readyz and gRPC health, and the caches follow by polling the change log instead.

import { randomUUID } from "node:crypto";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthzService } from "../../gen/flip/authz/v1/authz_pb.ts";
import {
  HealthCheckResponse_ServingStatus,
  HealthListRequestSchema,
  HealthListResponseSchema,
} from "../../gen/grpc/health/v1/health_pb.ts";
import { startApp } from "../../src/app.ts";
import { loadConfig } from "../../src/config.ts";
import { createLogger } from "../../src/logger.ts";
import { CHANGE_FEED } from "../../src/server/health.ts";
import { createAuthzClient, eventually } from "../helpers/app.ts";
import { type PgBouncer, startPgBouncer } from "../helpers/pgbouncer.ts";
import { createTestDatabase, postgresAvailable, type TestDatabase } from "../helpers/postgres.ts";
import { requireTool } from "../helpers/tools.ts";

const pgbouncer = requireTool("pgbouncer");
const m = AuthzService.method;
const RESEARCHER_ID = "10b64ed0-bc90-4c01-9cc3-933c704905c1";

interface Running {
  grpcTarget: string;
  httpBase: string;
  client: ReturnType<typeof createAuthzClient>;
  logs: { level: number; msg: string }[];
  close(): Promise<void>;
}

async function serve(env: Record<string, string>): Promise<Running> {
  const logs: { level: number; msg: string }[] = [];
  const logger = createLogger("info", {
    write: (line: string) => {
      logs.push(JSON.parse(line));
    },
  });
  const config = loadConfig({
    AUTHZ_GRPC_LISTEN: "127.0.0.1:0",
    AUTHZ_HTTP_LISTEN: "127.0.0.1:0",
    AUTHZ_SHUTDOWN_GRACE_MS: "1000",
    ...env,
  });
  const app = await startApp(config, logger);
  const grpcTarget = `127.0.0.1:${app.grpcPort}`;
  const client = createAuthzClient(grpcTarget);
  return {
    grpcTarget,
    httpBase: `http://127.0.0.1:${app.httpPort}`,
    client,
    logs,
    async close() {
      client.close();
      await app.shutdown();
    },
  };
}

/** grpc.health.v1.Health/List over a real gRPC connection: service name → status name. */
async function healthList(target: string): Promise<Record<string, string>> {
  const client = new grpc.Client(target, grpc.credentials.createInsecure());
  try {
    const answer = await new Promise<ReturnType<typeof fromBinary<typeof HealthListResponseSchema>>>(
      (resolve, reject) =>
        client.makeUnaryRequest(
          "/grpc.health.v1.Health/List",
          (value: object) => Buffer.from(toBinary(HealthListRequestSchema, value as never)),
          (bytes: Buffer) => fromBinary(HealthListResponseSchema, bytes),
          create(HealthListRequestSchema, {}),
          (error, value) => (error || !value ? reject(error) : resolve(value)),
        ),
    );
    const names = new Map<number, string>(
      Object.entries(HealthCheckResponse_ServingStatus).map(([name, value]) => [value, name]),
    );
    return Object.fromEntries(
      Object.entries(answer.statuses).map(([name, { status }]) => [
        name,
        names.get(status) ?? String(status),
      ]),
    );
  } finally {
    client.close();
  }
}

async function readyz(base: string): Promise<{ status: number; body: string }> {
  const response = await fetch(`${base}/readyz`);
  return { status: response.status, body: await response.text() };
}

describe.skipIf(!postgresAvailable || !pgbouncer.available)("PgBouncer (pool_mode=transaction)", () => {
  let db: TestDatabase;
  let bouncer: PgBouncer;
  let flip: pg.Client; // FLIP's own plain-SQL writes, on a direct connection

  beforeAll(async () => {
    db = await createTestDatabase("authz_pgbouncer");
    bouncer = await startPgBouncer(pgbouncer.path ?? "pgbouncer");
    flip = new pg.Client({ connectionString: db.url });
    flip.on("error", () => {});
    await flip.connect();
  }, 30_000);
  afterAll(async () => {
    await flip?.end().catch(() => {});
    await bouncer?.stop();
    await db?.drop();
  });

  /** Checks CAN_CREATE_PROJECTS (denied, now cached), grants Researcher by plain SQL, waits for the cache. */
  async function plainSqlWriteReachesChecks(running: Running): Promise<number> {
    const user = randomUUID();
    const check = () =>
      running.client.call(m.checkPermission, { userId: user, permission: "CAN_CREATE_PROJECTS" });
    expect((await check()).allowed).toBe(false); // now cached as denied
    await flip.query("INSERT INTO user_role (user_id, role_id) VALUES ($1, $2)", [user, RESEARCHER_ID]);
    return eventually(async () => (await check()).allowed, 5000);
  }

  it("with AUTHZ_LISTEN_DATABASE_URL: migrates, serves and writes through the pooler; LISTEN follows plain SQL", async () => {
    const running = await serve({
      DATABASE_URL: bouncer.url(db.name),
      AUTHZ_LISTEN_DATABASE_URL: db.url,
    });
    try {
      // Writes (transactions, advisory locks, audit rows) and reads through PgBouncer.
      const user = randomUUID();
      const assigned = await running.client.call(m.assignRole, { userId: user, role: "Admin" });
      expect(assigned).toMatchObject({ changed: true, roles: ["Admin"] });
      const allowed = await running.client.call(m.checkPermission, {
        userId: user,
        permission: "CAN_MANAGE_USERS",
      });
      expect(allowed.allowed).toBe(true);
      await plainSqlWriteReachesChecks(running);
      // The feed listens on the direct session and nothing is reported.
      expect(await readyz(running.httpBase)).toEqual({ status: 200, body: "ready\n" });
      expect(await healthList(running.grpcTarget)).not.toHaveProperty(CHANGE_FEED);
      const feedWarnings = running.logs.filter((line) => line.level >= 40 && /LISTEN|change/.test(line.msg));
      expect(feedWarnings.map((line) => line.msg)).toEqual([]);
    } finally {
      await running.close();
    }
  }, 30_000);

  it("without it: the broken LISTEN is detected, named in the log, /readyz and gRPC health; checks follow by polling", async () => {
    const running = await serve({ DATABASE_URL: bouncer.url(db.name) });
    try {
      const warning = running.logs.find((line) => line.level === 40 && /LISTEN/.test(line.msg));
      expect(warning?.msg).toMatch(/transaction pooler .*PgBouncer.*AUTHZ_LISTEN_DATABASE_URL.*Polling/);
      const ready = await readyz(running.httpBase);
      expect(ready.status).toBe(200);
      expect(ready.body).toBe(`ready\nwarning: ${warning?.msg}\n`);
      expect(await healthList(running.grpcTarget)).toEqual({
        "": "SERVING",
        [AuthzService.typeName]: "SERVING",
        [CHANGE_FEED]: "NOT_SERVING",
      });
      // Coherent all the same: a plain-SQL write reaches cached checks by polling the change log.
      await plainSqlWriteReachesChecks(running);
    } finally {
      await running.close();
    }
  }, 30_000);
});
