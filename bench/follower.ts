// Follower benchmarks (npm run bench -- follower), against an upstream on PostgreSQL in its own process:
// - a follower's cached CheckPermission against the upstream's own (h2load, each server in its own process;
//   it is the same code path, so the goal is ≥ 0.9×);
// - propagation from a plain-SQL commit to a follower's cache (goal p99 ≤ 50 ms), beside one `SELECT 1`;
// - a follower's memory with 100k users cached, beside the same follower synced and empty.

import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import pg from "pg";
import {
  CheckPermissionRequestSchema,
  CheckPermissionsRequestSchema,
  CheckPermissionsResponseSchema,
} from "../gen/flip/authz/v1/authz_pb.ts";
import { startFollower } from "../src/app.ts";
import { loadConfig } from "../src/config.ts";
import { createLogger } from "../src/logger.ts";
import { checkOnce, grpcFrame, h2load, startServer, stopServer } from "./load.ts";

const HOT_USER = "7a1d5c9e-3b4f-4a2e-8c6d-1e2f3a4b5c6d";
const RESEARCHER = "10b64ed0-bc90-4c01-9cc3-933c704905c1";

type Say = (line?: string) => void;

interface Memory {
  rss: number;
  heapUsed: number;
  cachedUsers: number;
}

const mib = (bytes: number) => (bytes / 1024 / 1024).toFixed(1);

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

/** The i-th synthetic user (deterministic, so a run can be repeated on the same database). */
function userId(i: number): string {
  return `00000000-0000-4000-9000-${i.toString(16).padStart(12, "0")}`;
}

export async function followerBench(databaseUrl: string, say: Say): Promise<void> {
  const sql = new pg.Client({ connectionString: databaseUrl });
  const upstream = await startServer([join(import.meta.dirname, "server.ts"), "app"], {
    DATABASE_URL: databaseUrl,
  });
  const followerEnv = { DATABASE_URL: "", AUTHZ_UPSTREAM: `127.0.0.1:${upstream.port}` };
  const follower = await startServer([join(import.meta.dirname, "follower-process.ts")], followerEnv, {
    nodeOptions: ["--expose-gc"],
    ipc: true,
  });
  const memory = () =>
    new Promise<Memory>((resolve) => {
      follower.child.once("message", (message) => resolve(message as Memory));
      follower.child.send("memory");
    });
  try {
    await sql.connect();
    await sql.query("INSERT INTO user_role (user_id, role_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", [
      HOT_USER,
      RESEARCHER,
    ]);
    await throughput(upstream.port, follower.port, say);
    await propagation(sql, upstream.port, say);
    const idle = await memory();
    const users = Number(process.env.BENCH_FOLLOWER_USERS ?? 100_000);
    const seconds = await fill(sql, follower.port, users);
    const full = await memory();
    say(
      `## Follower memory (after a full GC; ${users} users checked in ${seconds.toFixed(0)} s, 1 in 10 with a role)`,
    );
    say();
    say("| follower | cached users | RSS MiB | heap used MiB |");
    say("|---|---|---|---|");
    say(
      `| synced, nothing cached (baseline) | ${idle.cachedUsers} | ${mib(idle.rss)} | ${mib(idle.heapUsed)} |`,
    );
    say(`| ${users} users cached | ${full.cachedUsers} | ${mib(full.rss)} | ${mib(full.heapUsed)} |`);
    const perUser = (full.heapUsed - idle.heapUsed) / Math.max(1, full.cachedUsers - idle.cachedUsers);
    say(`| heap per cached user | | | ${perUser.toFixed(0)} bytes |`);
    say();
  } finally {
    await sql.end().catch(() => {});
    await stopServer(follower.child);
    await stopServer(upstream.child);
  }
}

async function throughput(upstreamPort: number, followerPort: number, say: Say): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "authz-bench-follower-"));
  const request = toBinary(
    CheckPermissionRequestSchema,
    create(CheckPermissionRequestSchema, { userId: HOT_USER, permission: "CAN_CREATE_PROJECTS" }),
  );
  const file = join(dir, "check.bin");
  writeFileSync(file, grpcFrame(request));
  const requests = Number(process.env.BENCH_REQUESTS ?? 40_000);
  const targets = [
    ["upstream (database-backed), cached CheckPermission", upstreamPort],
    ["follower, cached CheckPermission", followerPort],
  ] as const;
  const rates = new Map<string, number[]>();
  for (const [label, port] of targets) {
    const answer = await checkOnce(port, request);
    if (!answer.allowed) throw new Error(`${label}: the warm-up check was denied`);
    await h2load(port, file, Math.ceil(requests / 10));
  }
  // Alternated, twice, so drift in the machine's load falls on both.
  for (let round = 0; round < 2; round++) {
    for (const [label, port] of targets)
      rates.set(label, [...(rates.get(label) ?? []), await h2load(port, file, requests)]);
  }
  const mean = (label: string) => {
    const values = rates.get(label) ?? [];
    return values.reduce((a, b) => a + b, 0) / Math.max(1, values.length);
  };
  const baseline = mean(targets[0][0]);
  say("## Follower check throughput (h2load, 4 connections × 25 streams, each server in its own process)");
  say();
  say("| scenario | req/s (mean of 2) | ratio to the upstream |");
  say("|---|---|---|");
  for (const [label] of targets)
    say(`| ${label} | ${mean(label).toFixed(0)} | ${(mean(label) / baseline).toFixed(2)} |`);
  say();
}

/** Plain-SQL commits (as FLIP's Python API writes) until a follower in this process has applied each. */
async function propagation(sql: pg.Client, upstreamPort: number, say: Say): Promise<void> {
  const config = loadConfig({
    AUTHZ_UPSTREAM: `127.0.0.1:${upstreamPort}`,
    AUTHZ_GRPC_LISTEN: "127.0.0.1:0",
    AUTHZ_HTTP_LISTEN: "127.0.0.1:0",
  });
  const follower = await startFollower(config, createLogger("error"));
  const changes = Number(process.env.BENCH_CHANGES ?? 1000);
  const latencies: number[] = [];
  const baseline: number[] = [];
  try {
    while (!follower.reader.live) await new Promise((resolve) => setTimeout(resolve, 20));
    for (let i = 0; i < changes; i++) {
      await sql.query("BEGIN");
      await sql.query("INSERT INTO user_role (user_id, role_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", [
        `00000000-0000-4000-a000-${i.toString(16).padStart(12, "0")}`,
        RESEARCHER,
      ]);
      const { rows } = await sql.query<{ revision: string }>("SELECT revision::text FROM authz_revision");
      const revision = Number(rows[0]?.revision);
      const t0 = performance.now();
      await sql.query("COMMIT");
      const b0 = performance.now();
      await sql.query("SELECT 1");
      baseline.push(performance.now() - b0);
      if (!(await follower.reader.waitFor(revision, 5000))) {
        throw new Error(`revision ${revision} did not reach the follower in 5 s`);
      }
      latencies.push(performance.now() - t0);
    }
  } finally {
    await follower.shutdown();
  }
  latencies.sort((a, b) => a - b);
  baseline.sort((a, b) => a - b);
  const row = (label: string, values: number[]) =>
    say(
      `| ${label} | ${percentile(values, 50).toFixed(2)} | ${percentile(values, 99).toFixed(2)} | ${(values.at(-1) ?? 0).toFixed(2)} |`,
    );
  say(
    `## Propagation: plain-SQL commit → applied in a follower's cache (via the upstream, ${changes} changes)`,
  );
  say();
  say("| | p50 ms | p99 ms | max ms |");
  say("|---|---|---|---|");
  row("commit → follower", latencies);
  row("baseline: one round trip `SELECT 1`", baseline);
  say();
}

/**
 * CheckPermissions calls the fill keeps in flight, 100 users each. 16 filled 100k users in 18 s here, 4 in
 * 29 s and 32 in 22 s (each miss is a GetProfile to the upstream, which the upstream reads in batches).
 */
const FILL_IN_FLIGHT = 16;

/** Checks `users` distinct users through the follower, FILL_IN_FLIGHT batches at once; resolves to seconds. */
async function fill(sql: pg.Client, followerPort: number, users: number): Promise<number> {
  // One in ten holds a role, the rest have no rows (cached as such): what a sidecar sees.
  await sql.query(
    `INSERT INTO user_role (user_id, role_id)
     SELECT ('00000000-0000-4000-9000-' || lpad(to_hex(i), 12, '0'))::uuid, $1 FROM generate_series(0, $2 - 1, 10) i
     ON CONFLICT DO NOTHING`,
    [RESEARCHER, users],
  );
  // Let the follower apply those changes first, so they do not invalidate users the fill just cached.
  await new Promise((resolve) => setTimeout(resolve, 2000));
  const client = new grpc.Client(`127.0.0.1:${followerPort}`, grpc.credentials.createInsecure());
  const started = performance.now();
  let next = 0;
  const worker = async () => {
    while (next < users) {
      const from = next;
      next += 100;
      const checks: { userId: string; permission: string }[] = [];
      for (let i = from; i < Math.min(users, from + 100); i++)
        checks.push({ userId: userId(i), permission: "CAN_CREATE_PROJECTS" });
      await new Promise<void>((resolve, reject) => {
        client.makeUnaryRequest(
          "/flip.authz.v1.AuthzService/CheckPermissions",
          (bytes: Uint8Array) => Buffer.from(bytes),
          (bytes: Buffer) => fromBinary(CheckPermissionsResponseSchema, bytes),
          toBinary(CheckPermissionsRequestSchema, create(CheckPermissionsRequestSchema, { checks })),
          { deadline: Date.now() + 60_000 },
          (error) => (error ? reject(error) : resolve()),
        );
      });
    }
  };
  try {
    await Promise.all(Array.from({ length: FILL_IN_FLIGHT }, worker));
  } finally {
    client.close();
  }
  return (performance.now() - started) / 1000;
}
