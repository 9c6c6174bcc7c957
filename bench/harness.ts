// What the scenarios share: servers in their own processes pinned to one core (bench/server.ts), the load
// generator (h2load) pinned to the other, one real call before a load run, fresh PostgreSQL databases,
// process memory and percentiles.

import { execFile, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { type DescMessage, fromBinary, type MessageShape } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import pg from "pg";
import { AuthzService, CheckPermissionResponseSchema } from "../gen/flip/authz/v1/authz_pb.ts";
import { methodPath } from "../src/rpc/method-name.ts";
import type { LoadJob, LoadOutcome } from "./grpc-load.ts";
import type { PostgresAccess } from "./report.ts";

export const run = promisify(execFile);

/** With two or more cores: servers on the last one, load generators on the first. */
const CORES = availableParallelism();
export const SERVER_CPU = CORES > 1 ? String(CORES - 1) : undefined;
export const LOAD_CPU = CORES > 1 ? "0" : undefined;

/** `command args` pinned to `cpu` with taskset (which execs, so the pid is the command's). */
export function pinned(cpu: string | undefined, command: string, args: string[]): [string, string[]] {
  return cpu === undefined ? [command, args] : ["taskset", ["-c", cpu, command, ...args]];
}

export interface BenchServer {
  /** gRPC port (0 for the HTTP-only references). */
  port: number;
  /** HTTP port (0 for the gRPC-only references). */
  httpPort: number;
  pid: number;
  /** The Node flags it runs with (from /proc: what the entry added is there too). */
  nodeFlags(): string[];
  /** Resident set size now, in MB (from /proc). */
  rssMb(): number;
  /** The V8 heap after a full GC, over the inspector (only for a service started with `inspect`). */
  heap(): Promise<{ usedMb: number; totalMb: number }>;
  stop(): Promise<void>;
}

export interface ServerOptions {
  env?: Record<string, string>;
  /** Node flags placed before the script, e.g. ["--max-semi-space-size=0"]. */
  nodeArgs?: string[];
  /** Defaults to SERVER_CPU. */
  cpu?: string | undefined;
}

/** A reference server: `bench/server.ts <mode>` in its own process on the same Node binary as this one. */
export function startServer(mode: string, options: ServerOptions = {}): Promise<BenchServer> {
  return spawnServer(join(import.meta.dirname, "server.ts"), [mode], options, (line) => {
    const parsed = JSON.parse(line) as { port?: number; httpPort?: number };
    return parsed.port === undefined ? undefined : { port: parsed.port, httpPort: parsed.httpPort ?? 0 };
  });
}

export interface ServiceOptions extends ServerOptions {
  /** Opens the inspector on this port, so heap() can measure the heap after a full GC. */
  inspectPort?: number;
}

/**
 * The service through its real entry, `bin/flip-authz.js serve` (so with the Node flags it sets), in open
 * mode on free loopback ports; `env` adds DATABASE_URL and the rest (AUTHZ_UPSTREAM makes it a follower).
 */
export async function startService(options: ServiceOptions = {}): Promise<BenchServer> {
  const entry = join(import.meta.dirname, "..", "bin", "flip-authz.js");
  const server = await spawnServer(
    entry,
    ["serve"],
    {
      ...options,
      nodeArgs: [
        ...(options.nodeArgs ?? []),
        ...(options.inspectPort === undefined ? [] : [`--inspect=127.0.0.1:${options.inspectPort}`]),
      ],
      env: {
        AUTHZ_LOG_LEVEL: "info",
        AUTHZ_GRPC_LISTEN: "127.0.0.1:0",
        AUTHZ_HTTP_LISTEN: "127.0.0.1:0",
        ...options.env,
      },
    },
    (line) => {
      const parsed = JSON.parse(line) as { msg?: string; grpc?: string; http?: string };
      // A follower (AUTHZ_UPSTREAM set) says "flip-authz follower listening".
      if (parsed.msg !== "flip-authz listening" && parsed.msg !== "flip-authz follower listening")
        return undefined;
      const port = (address?: string) => Number(address?.slice(address.lastIndexOf(":") + 1));
      return { port: port(parsed.grpc), httpPort: port(parsed.http) };
    },
  );
  if (options.inspectPort === undefined) return server;
  const inspectPort = options.inspectPort;
  return { ...server, heap: () => heapAfterGc(inspectPort) };
}

function spawnServer(
  script: string,
  scriptArgs: string[],
  options: ServerOptions,
  ready: (line: string) => { port: number; httpPort: number } | undefined,
): Promise<BenchServer> {
  const [command, args] = pinned(options.cpu ?? SERVER_CPU, process.execPath, [
    ...(options.nodeArgs ?? []),
    script,
    ...scriptArgs,
  ]);
  const child = spawn(command, args, {
    env: { ...process.env, ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    // The inspector's banner is expected; anything else is worth seeing.
    stderr += chunk.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
  return new Promise((resolve, reject) => {
    let buffered = "";
    let found = false;
    child.stdout?.on("data", (chunk: Buffer) => {
      if (found) return;
      buffered += chunk.toString();
      for (const line of buffered.split("\n")) {
        if (!line.startsWith("{")) continue;
        let ports: { port: number; httpPort: number } | undefined;
        try {
          ports = ready(line);
        } catch {
          ports = undefined;
        }
        if (!ports) continue;
        found = true;
        const pid = child.pid ?? 0;
        resolve({
          ...ports,
          pid,
          nodeFlags: () => nodeFlags(pid, script),
          rssMb: () => rssMb(pid),
          heap: () => Promise.reject(new Error("heap(): start the service with inspectPort")),
          async stop() {
            if (child.exitCode !== null) return;
            child.kill("SIGTERM");
            const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
            await exited;
            clearTimeout(timer);
          },
        });
        return;
      }
      buffered = buffered.slice(buffered.lastIndexOf("\n") + 1);
    });
    void exited.then((code) => {
      if (!found) reject(new Error(`${script} ${scriptArgs.join(" ")} exited with ${code}:\n${stderr}`));
    });
  });
}

/** Over the Chrome DevTools protocol: two full GCs, then the heap's used and total size. */
async function heapAfterGc(inspectPort: number): Promise<{ usedMb: number; totalMb: number }> {
  const targets = (await (await fetch(`http://127.0.0.1:${inspectPort}/json/list`)).json()) as {
    webSocketDebuggerUrl: string;
  }[];
  const url = targets[0]?.webSocketDebuggerUrl;
  if (!url) throw new Error("no inspector target");
  const socket = new WebSocket(url);
  await new Promise((resolve, reject) => {
    socket.addEventListener("open", resolve, { once: true });
    socket.addEventListener("error", reject, { once: true });
  });
  let nextId = 1;
  const pending = new Map<number, (result: unknown) => void>();
  socket.addEventListener("message", (event) => {
    const message = JSON.parse(String(event.data)) as { id?: number; result?: unknown };
    if (message.id !== undefined) pending.get(message.id)?.(message.result);
  });
  const send = (method: string) =>
    new Promise<unknown>((resolve) => {
      const id = nextId++;
      pending.set(id, resolve);
      socket.send(JSON.stringify({ id, method }));
    });
  try {
    await send("HeapProfiler.collectGarbage");
    await send("HeapProfiler.collectGarbage");
    const usage = (await send("Runtime.getHeapUsage")) as { usedSize: number; totalSize: number };
    return { usedMb: usage.usedSize / 1024 / 1024, totalMb: usage.totalSize / 1024 / 1024 };
  } finally {
    socket.close();
  }
}

/** The arguments between the node binary and `script` on a process's command line. */
function nodeFlags(pid: number, script: string): string[] {
  const args = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
  const at = args.indexOf(script);
  return at < 0 ? [] : args.slice(1, at);
}

/** VmRSS of a process in MB (0 when it is gone). */
export function rssMb(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const kb = /VmRSS:\s+(\d+) kB/.exec(status)?.[1];
    return kb === undefined ? 0 : Number(kb) / 1024;
  } catch {
    return 0;
  }
}

/** A gRPC message with its 5-byte length prefix, as h2load sends it. */
export function grpcFrame(message: Uint8Array): Buffer {
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  Buffer.from(message).copy(frame, 5);
  return frame;
}

export const CHECK_PATH = methodPath(AuthzService.method.checkPermission);

/** One real call first: h2load counts an HTTP 200 with a non-zero grpc-status as a success. */
export function checkOnce(port: number, request: Uint8Array): Promise<{ allowed: boolean }> {
  return unaryOnce(port, CHECK_PATH, request, CheckPermissionResponseSchema);
}

/** One unary call of `path` on a server's gRPC port: the answer, decoded as `schema`. */
export function unaryOnce<Desc extends DescMessage>(
  port: number,
  path: string,
  request: Uint8Array,
  schema: Desc,
): Promise<MessageShape<Desc>> {
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(
      path,
      (bytes: Uint8Array) => Buffer.from(bytes),
      (bytes: Buffer) => fromBinary(schema, bytes),
      request,
      (error, response) => {
        client.close();
        if (error || !response) reject(error ?? new Error("no response"));
        else resolve(response);
      },
    );
  });
}

export interface LoadOptions {
  url: string;
  /** The request body (a POST); without it, GET. */
  bodyFile?: string;
  headers?: string[];
  /** Seconds of measurement (after `warmUp` seconds not counted). */
  seconds: number;
  /** Seconds, or h2load's duration with a unit ("500ms"). */
  warmUp?: number | string;
  clients?: number;
  streams?: number;
  /** Offered load in requests per second, all clients together (h2load's --rps is per client). */
  rps?: number;
  /** HTTP/1.1 instead of h2c. */
  h1?: boolean;
}

export interface LoadResult {
  rate: number;
  requests: number;
  /** Per-request latencies in ms, sorted (only with `rps`). */
  latencies: number[];
}

/** Runs h2load on the load core; fails when any request did not succeed (HTTP 2xx). */
export async function h2load(options: LoadOptions): Promise<LoadResult> {
  const clients = options.clients ?? 4;
  const logFile = options.rps === undefined ? undefined : join(tmpDirectory(), `h2load-${Date.now()}.log`);
  const args = [
    ...["-D", String(options.seconds), "-c", String(clients), "-m", String(options.streams ?? 25), "-t", "1"],
    ...(options.warmUp ? ["--warm-up-time", String(options.warmUp)] : []),
    ...(options.rps === undefined ? [] : [`--rps=${Math.max(1, Math.round(options.rps / clients))}`]),
    ...(logFile ? [`--log-file=${logFile}`] : []),
    ...(options.h1 ? ["--h1"] : []),
    ...(options.headers ?? []).flatMap((header) => ["-H", header]),
    ...(options.bodyFile === undefined ? [] : ["-d", options.bodyFile]),
    options.url,
  ];
  const [command, commandArgs] = pinned(LOAD_CPU, "h2load", args);
  const { stdout } = await run(command, commandArgs, { encoding: "utf8", maxBuffer: 16 * 1024 * 1024 });
  const rate = /finished in [\d.]+\w+, ([\d.]+) req\/s/.exec(stdout);
  const counts = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed/.exec(
    stdout,
  );
  if (!rate?.[1] || !counts || Number(counts[5]) > 0 || Number(counts[4]) === 0) {
    throw new Error(`h2load failed:\n${stdout}`);
  }
  // A timed run also counts the requests still in flight at its end: none may be answered but 2xx.
  const statuses = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(stdout);
  if (!statuses || Number(statuses[2]) + Number(statuses[3]) + Number(statuses[4]) > 0) {
    throw new Error(`h2load: answers other than 2xx:\n${stdout}`);
  }
  let latencies: number[] = [];
  if (logFile) {
    latencies = readFileSync(logFile, "utf8")
      .split("\n")
      .filter((line) => line !== "")
      .map((line) => Number(line.split("\t")[2]) / 1000)
      .sort((a, b) => a - b);
    rmSync(logFile, { force: true });
  }
  return { rate: Number(rate[1]), requests: Number(counts[4]), latencies };
}

let tmp: string | undefined;
/** A scratch directory for this run; removeTmpDirectory() at the end. */
export function tmpDirectory(): string {
  tmp ??= mkdtempSync(join(tmpdir(), "authz-bench-"));
  return tmp;
}

export function removeTmpDirectory(): void {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
  tmp = undefined;
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

export function median(values: readonly number[]): number {
  return percentile(
    [...values].sort((a, b) => a - b),
    50,
  );
}

/** PostgreSQL at `adminUrl`, or undefined when it does not answer. Databases made here are dropped by `dropAll`. */
export async function connectPostgres(
  adminUrl: string,
): Promise<(PostgresAccess & { dropAll(): Promise<void> }) | undefined> {
  const probe = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 2000 });
  try {
    await probe.connect();
    await probe.end();
  } catch {
    return undefined;
  }
  const created = new Set<string>();
  const drop = async (name: string) => {
    const client = new pg.Client({ connectionString: adminUrl });
    await client.connect();
    try {
      await client.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
    } finally {
      await client.end();
    }
    created.delete(name);
  };
  return {
    adminUrl,
    async createDatabase(label) {
      const name = `authz_bench_${label.replace(/\W/g, "_")}_${Date.now().toString(36)}`;
      const client = new pg.Client({ connectionString: adminUrl });
      await client.connect();
      try {
        await client.query(`CREATE DATABASE "${name}"`);
      } finally {
        await client.end();
      }
      created.add(name);
      const url = new URL(adminUrl);
      url.pathname = `/${name}`;
      return { url: url.toString(), name, drop: () => drop(name) };
    },
    async dropAll() {
      for (const name of [...created]) await drop(name);
    },
  };
}

/** A loopback port free now. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  if (address === null || typeof address === "string") throw new Error("no port");
  return address.port;
}

/**
 * `changes` plain-SQL commits on `writer`, as FLIP's Python API writes (one user_role row for `userId(i)`
 * each), each timed from COMMIT until `applied(revision)` resolves true, and one round trip (`SELECT 1` on
 * the same connection) after each as the reference. Both sorted, in ms. Throws when one is not applied.
 */
export async function timedCommits(
  writer: pg.Client,
  changes: number,
  row: { userId(i: number): string; roleId: string },
  applied: (revision: number) => Promise<boolean>,
): Promise<{ latencies: number[]; baseline: number[] }> {
  const latencies: number[] = [];
  const baseline: number[] = [];
  for (let i = 0; i < changes; i++) {
    await writer.query("BEGIN");
    await writer.query("INSERT INTO user_role (user_id, role_id) VALUES ($1, $2)", [
      row.userId(i),
      row.roleId,
    ]);
    // A plain-SQL writer's change is logged at once: the counter already holds its revision.
    const { rows } = await writer.query<{ revision: string }>("SELECT revision::text FROM authz_revision");
    const revision = Number(rows[0]?.revision);
    const t0 = performance.now();
    await writer.query("COMMIT");
    const b0 = performance.now();
    await writer.query("SELECT 1");
    baseline.push(performance.now() - b0);
    if (!(await applied(revision))) throw new Error(`revision ${revision} was not applied in time`);
    latencies.push(performance.now() - t0);
  }
  latencies.sort((a, b) => a - b);
  baseline.sort((a, b) => a - b);
  return { latencies, baseline };
}

/** One value from a service's /metrics (its HTTP listener). */
export async function metric(server: BenchServer, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${server.httpPort}/metrics`)).text();
  return Number(new RegExp(`^${name} (\\S+)`, "m").exec(text)?.[1]);
}

/** Runs bench/grpc-load.ts on the load core with this job (bodies differing per call, checked answers). */
export async function grpcLoad(job: LoadJob): Promise<LoadOutcome> {
  const file = join(tmpDirectory(), `load-${Date.now()}-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(file, JSON.stringify(job));
  try {
    const [command, args] = pinned(LOAD_CPU, process.execPath, [
      join(import.meta.dirname, "grpc-load.ts"),
      file,
    ]);
    const { stdout } = await run(command, args, { encoding: "utf8", maxBuffer: 256 * 1024 * 1024 });
    return JSON.parse(stdout) as LoadOutcome;
  } finally {
    rmSync(file, { force: true });
  }
}

/** CPU seconds (user + system) a process has used, from /proc. */
export function cpuSeconds(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return Number.NaN;
  }
}

const CLOCK_TICKS = 100;

export interface PairedRound {
  /** req/s of each server. */
  rates: [number, number];
  /** Requests answered per CPU-second of each server: what it would do with the core to itself. */
  perCpuSecond: [number, number];
}

export interface PairedResult {
  rounds: PairedRound[];
  /** Median over rounds of a's req/s over b's. */
  ratio: number;
  /** Median over rounds of a's requests per CPU-second over b's. */
  cpuRatio: number;
  /** Each server's median requests per CPU-second. */
  perCpuSecond: [number, number];
  rates: [number, number];
}

/**
 * Loads two servers at once, both pinned to the server core (one h2load each on the load core): the kernel
 * gives two busy processes on one core equal shares, so their req/s ratio is the inverse ratio of their
 * cost per call, and a burst of other load on the machine hits both alike. (Checked with two identical
 * no-op servers at a load average of 13: ratios 0.94–1.06, where runs one after the other ranged
 * 0.58–2.88.) Also reports requests per CPU-second each got. `rounds` runs of `seconds`, after a warm-up.
 */
export async function pairedLoad(
  servers: [BenchServer, BenchServer],
  bodyFile: string | undefined,
  options: {
    rounds: number;
    seconds: number;
    headers: string[];
    path: string;
    h1?: boolean;
    /**
     * Seconds each server is loaded alone first, one after the other: a server started just now runs well
     * below its pace until V8 has compiled its hot code, and one with more code takes longer to get there.
     */
    warmUpAlone?: number;
  },
): Promise<PairedResult> {
  // HTTP/1.1: 64 keep-alive connections, one request in flight on each (no pipelining).
  const shape = options.h1 ? { h1: true, clients: 64, streams: 1 } : {};
  const load = (server: BenchServer, seconds: number) =>
    h2load({
      url: `http://127.0.0.1:${server.port}${options.path}`,
      ...(bodyFile !== undefined && { bodyFile }),
      headers: options.headers,
      seconds,
      ...shape,
    });
  const run = (seconds: number) => Promise.all(servers.map((server) => load(server, seconds)));
  if (options.warmUpAlone !== undefined)
    for (const server of servers) await load(server, options.warmUpAlone);
  await run(1); // warm-up (JIT), not counted
  const rounds: PairedRound[] = [];
  for (let round = 0; round < options.rounds; round++) {
    const before = servers.map((server) => cpuSeconds(server.pid));
    const [a, b] = (await run(options.seconds)) as [LoadResult, LoadResult];
    const used = servers.map((server, i) =>
      Math.max(cpuSeconds(server.pid) - (before[i] ?? 0), 1 / CLOCK_TICKS),
    );
    rounds.push({
      rates: [a.rate, b.rate],
      perCpuSecond: [a.requests / (used[0] ?? 1), b.requests / (used[1] ?? 1)],
    });
  }
  return {
    rounds,
    ratio: median(rounds.map((r) => r.rates[0] / r.rates[1])),
    cpuRatio: median(rounds.map((r) => r.perCpuSecond[0] / r.perCpuSecond[1])),
    perCpuSecond: [
      median(rounds.map((r) => r.perCpuSecond[0])),
      median(rounds.map((r) => r.perCpuSecond[1])),
    ],
    rates: [median(rounds.map((r) => r.rates[0])), median(rounds.map((r) => r.rates[1]))],
  };
}
