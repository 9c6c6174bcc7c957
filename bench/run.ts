// The benchmark report (npm run bench). Every number is a ratio against a baseline measured in the same
// run and process tree, because these machines are noisy. Needs h2load (Debian: nghttp2-client) for the
// throughput part and PostgreSQL (TEST_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432/postgres)
// for the propagation part; without PostgreSQL the throughput part runs on SQLite.
//
//   npm run bench                 everything
//   npm run bench -- throughput   only check throughput
//   npm run bench -- propagation  only propagation latency
//   npm run bench -- guard        only the route guard (ext_authz, /forward-auth; bench/guard.ts)
//   npm run bench -- follower     only the follower's (bench/follower.ts)

import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import pg from "pg";
import { CheckPermissionRequestSchema } from "../gen/flip/authz/v1/authz_pb.ts";
import { startApp } from "../src/app.ts";
import { NIL_UUID } from "../src/authz/ids.ts";
import { loadConfig } from "../src/config.ts";
import { createLogger } from "../src/logger.ts";
import { openStore } from "../src/store/index.ts";
import { followerBench } from "./follower.ts";
import { guardBench } from "./guard.ts";
import { checkOnce, grpcFrame, h2load, startServer, stopServer } from "./load.ts";

const ADMIN_URL = process.env.TEST_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const HOT_USER = "6f0c1f4e-2a53-4c7e-9d8b-0a1b2c3d4e5f";
const ADMIN_USER = "11111111-2222-4333-8444-555555555555";
const parts = new Set(process.argv.slice(2));
const wants = (part: string) => parts.size === 0 || parts.has(part);
const report: string[] = [`# flip-authz benchmark, ${new Date().toISOString()}`, ""];
const say = (line = "") => {
  report.push(line);
  process.stdout.write(`${line}\n`);
};

async function postgres(): Promise<{ url: string; drop: () => Promise<void> } | undefined> {
  const admin = new pg.Client({ connectionString: ADMIN_URL, connectionTimeoutMillis: 2000 });
  try {
    await admin.connect();
  } catch {
    return undefined;
  }
  const name = `authz_bench_${Date.now().toString(36)}`;
  await admin.query(`CREATE DATABASE "${name}"`);
  await admin.end();
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      const client = new pg.Client({ connectionString: ADMIN_URL });
      await client.connect();
      await client.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      await client.end();
    },
  };
}

async function throughput(databaseUrl: string): Promise<void> {
  const store = await openStore(loadConfig({ DATABASE_URL: databaseUrl }).database, { migrate: true });
  await store.assignRole(HOT_USER, "10b64ed0-bc90-4c01-9cc3-933c704905c1", NIL_UUID);
  await store.close();

  const dir = mkdtempSync(join(tmpdir(), "authz-bench-"));
  const body = (fullyConsistent: boolean) => {
    const file = join(dir, `check-${fullyConsistent}.bin`);
    const request = create(CheckPermissionRequestSchema, {
      userId: HOT_USER,
      permission: "CAN_CREATE_PROJECTS",
      fullyConsistent,
    });
    writeFileSync(file, grpcFrame(toBinary(CheckPermissionRequestSchema, request)));
    return { file, bytes: toBinary(CheckPermissionRequestSchema, request) };
  };
  const cached = body(false);
  const full = body(true);
  const requests = Number(process.env.BENCH_REQUESTS ?? 40_000);
  const env = { DATABASE_URL: databaseUrl, AUTHZ_MIGRATE_ON_START: "false" };

  const rates: Record<string, number> = {};
  for (const [label, mode, payload, n] of [
    ["raw grpc-js, no-op handler (baseline)", "raw", cached, requests],
    ["our grpc-js bridge, no-op Connect handler", "bridge", cached, requests],
    ["CheckPermission, cached", "app", cached, requests],
    ["CheckPermission, fully_consistent", "app", full, Math.ceil(requests / 10)],
  ] as const) {
    const { port, child } = await startServer([join(import.meta.dirname, "server.ts"), mode], env);
    try {
      const answer = await checkOnce(port, payload.bytes);
      if (!answer.allowed) throw new Error(`${label}: the warm-up check was denied`);
      await h2load(port, payload.file, Math.ceil(n / 10)); // warm-up (JIT, caches)
      rates[label] = await h2load(port, payload.file, n);
    } finally {
      await stopServer(child);
    }
  }

  // Checks of the hot user while 100 writes/s change that same user's roles (each write invalidates
  // its cache entry on this replica, via the change feed).
  const { port, child } = await startServer([join(import.meta.dirname, "server.ts"), "app"], env);
  const writerStore = await openStore(loadConfig({ DATABASE_URL: databaseUrl }).database, { migrate: false });
  let writes = 0;
  let running = true;
  const writer = (async () => {
    const started = Date.now();
    while (running) {
      const viewer = "cdee79c9-a5e1-4b9e-a315-1ec2f3d29efe";
      if (writes % 2 === 0) await writerStore.assignRole(HOT_USER, viewer, NIL_UUID);
      else await writerStore.revokeRole(HOT_USER, viewer, NIL_UUID);
      writes++;
      const due = started + writes * 10;
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, due - Date.now())));
    }
  })();
  const label = "CheckPermission, cached, while 100 writes/s invalidate the user";
  try {
    await checkOnce(port, cached.bytes);
    const startedAt = Date.now();
    rates[label] = await h2load(port, cached.file, requests);
    const seconds = (Date.now() - startedAt) / 1000;
    running = false;
    await writer;
    say(`(writer: ${writes} writes in ${seconds.toFixed(1)} s of load, ${(writes / seconds).toFixed(0)}/s)`);
  } finally {
    running = false;
    await writer;
    await writerStore.close();
    await stopServer(child);
  }

  const baseline = rates["raw grpc-js, no-op handler (baseline)"] ?? 1;
  say(
    `## Check throughput (${databaseUrl.startsWith("sqlite") ? "SQLite" : "PostgreSQL"}; h2load, 4 connections × 25 streams, server on its own process)`,
  );
  say();
  say("| scenario | req/s | ratio to baseline |");
  say("|---|---|---|");
  for (const [name, rate] of Object.entries(rates)) {
    say(`| ${name} | ${rate.toFixed(0)} | ${(rate / baseline).toFixed(2)} |`);
  }
  say();
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

async function propagation(databaseUrl: string): Promise<void> {
  const config = loadConfig({
    DATABASE_URL: databaseUrl,
    AUTHZ_GRPC_LISTEN: "127.0.0.1:0",
    AUTHZ_HTTP_LISTEN: "127.0.0.1:0",
  });
  const logger = createLogger("error");
  const replicas = [await startApp(config, logger), await startApp(config, logger)];
  const writer = new pg.Client({ connectionString: databaseUrl });
  await writer.connect();
  const changes = Number(process.env.BENCH_CHANGES ?? 1000);
  const latencies: number[] = [];
  const baseline: number[] = [];
  try {
    await replicas[0]?.authz.assignRole(ADMIN_USER, "Admin", NIL_UUID);
    for (let i = 0; i < changes; i++) {
      const user = `00000000-0000-4000-8000-${i.toString(16).padStart(12, "0")}`;
      // As FLIP's Python API writes: plain SQL, no help from us.
      await writer.query("BEGIN");
      await writer.query("INSERT INTO user_role (user_id, role_id) VALUES ($1, $2)", [
        user,
        "10b64ed0-bc90-4c01-9cc3-933c704905c1",
      ]);
      const { rows } = await writer.query<{ revision: string }>(
        "SELECT max(revision)::text AS revision FROM authz_change_log",
      );
      const revision = Number(rows[0]?.revision);
      const t0 = performance.now();
      await writer.query("COMMIT");
      // Baseline: the same round trip the commit took, again (a trivial query on the same connection).
      const b0 = performance.now();
      await writer.query("SELECT 1");
      baseline.push(performance.now() - b0);
      const applied = await Promise.all(replicas.map((replica) => replica.reader.waitFor(revision, 5000)));
      if (applied.includes(false)) throw new Error(`revision ${revision} did not reach every replica in 5 s`);
      latencies.push(performance.now() - t0);
    }
  } finally {
    await writer.end();
    await Promise.all(replicas.map((replica) => replica.shutdown()));
  }
  latencies.sort((a, b) => a - b);
  baseline.sort((a, b) => a - b);
  say(`## Propagation: plain-SQL commit → applied on both replicas' caches (PostgreSQL, ${changes} changes)`);
  say();
  say("| | p50 ms | p99 ms | max ms |");
  say("|---|---|---|---|");
  say(
    `| commit → every replica | ${percentile(latencies, 50).toFixed(2)} | ${percentile(latencies, 99).toFixed(2)} | ${(latencies.at(-1) ?? 0).toFixed(2)} |`,
  );
  say(
    `| baseline: one round trip \`SELECT 1\` | ${percentile(baseline, 50).toFixed(2)} | ${percentile(baseline, 99).toFixed(2)} | ${(baseline.at(-1) ?? 0).toFixed(2)} |`,
  );
  say(
    `| ratio p99 / baseline p99 | | ${(percentile(latencies, 99) / percentile(baseline, 99)).toFixed(1)} | |`,
  );
  say();
}

const database = await postgres();
try {
  const sqliteDir = mkdtempSync(join(tmpdir(), "authz-bench-sqlite-"));
  if (wants("throughput")) await throughput(database?.url ?? `sqlite:${join(sqliteDir, "bench.db")}`);
  if (wants("propagation")) {
    if (database) await propagation(database.url);
    else say("Propagation: skipped (no PostgreSQL at TEST_POSTGRES_URL)");
  }
  if (wants("guard")) await guardBench(say);
  if (wants("follower")) {
    if (database) await followerBench(database.url, say);
    else say("Follower: skipped (no PostgreSQL at TEST_POSTGRES_URL)");
  }
} finally {
  await database?.drop();
}
mkdirSync(join(import.meta.dirname, "results"), { recursive: true });
writeFileSync(join(import.meta.dirname, "results", "latest.md"), `${report.join("\n")}\n`);
process.exit(0);
