// Soak (issue 12 §6), run only when named: `npm run bench -- soak` (not part of `npm run bench`).
//
// The service through its real entry on a fresh PostgreSQL database of 100,000 users (a 5,000-user cache,
// so random users keep missing and evicting) takes SOAK_SECONDS (default 600) of mixed load from a load
// process pinned to the load core (this file run as a script): cached and uncached CheckPermission and
// CheckPermissions over gRPC and over Connect JSON, and AssignRole/RevokeRole/UpdateProfile at a modest
// rate over both. Every SAMPLE seconds it samples the service's RSS and open file descriptors (from /proc
// and from /metrics), heap used and event-loop delay p99 (prom-client's default metrics; the delay
// histogram is reset at each scrape, so each sample covers the interval since the one before), and writes
// them to bench/results/soak-<date>.csv.
//
// Rows: per series the last window's median against the second window's (the first is warm-up: JIT, the
// cache filling), the first window's median, the least-squares slope per minute after the warm-up, and a
// flat/not-flat verdict with its tolerance; then requests and errors by code (no error is expected).
// A window is a minute, or a fifth of a run shorter than five minutes.

import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import http2 from "node:http2";
import net from "node:net";
import { join } from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import {
  AssignRoleRequestSchema,
  CheckPermissionRequestSchema,
  CheckPermissionsRequestSchema,
  RevokeRoleRequestSchema,
  UpdateProfileRequestSchema,
} from "../../gen/flip/authz/v1/authz_pb.ts";
import { benchUserId, HOT_PERMISSION, HOT_USER, usersDatabase } from "../fixtures.ts";
import { answerOk, unaryCall } from "../grpc-load.ts";
import {
  CHECK_PATH,
  checkOnce,
  grpcFrame,
  LOAD_CPU,
  median,
  pinned,
  rssMb,
  run as runCommand,
  startService,
  tmpDirectory,
} from "../harness.ts";
import type { BenchContext, Row, Scenario } from "../report.ts";

const SECONDS = Number(process.env.SOAK_SECONDS ?? 600);
const SAMPLE_SECONDS = Number(process.env.SOAK_SAMPLE_SECONDS ?? 5);
/** Offered load, all kinds together, is about 1,000 calls/s times this. */
const SCALE = Number(process.env.SOAK_SCALE ?? 1);
const USERS = 100_000;
const CACHE_SIZE = 5_000;
/** Users checked often enough to stay cached (benchUserId(0…WARM-1)); the writes go to these too. */
const WARM = 500;
const SERVICE = "/flip.authz.v1.AuthzService";

export const soak: Scenario = {
  name: "soak",
  title: "Soak: mixed checks and writes for SOAK_SECONDS; RSS, heap, fds and event-loop delay flat or not",
  run,
};

/** One kind of call the load process sends at a steady rate. */
interface Kind {
  name: string;
  transport: "grpc" | "json";
  /** The k-th call's method path. */
  path(k: number): string;
  /** Calls per second (before SCALE). */
  rate: number;
  /** The k-th call's body: a gRPC frame, or a JSON text. */
  body(k: number): Buffer | string;
}

const randomUser = () => benchUserId(Math.floor(Math.random() * USERS));
const warmUser = () => (Math.random() < 0.2 ? HOT_USER : benchUserId(Math.floor(Math.random() * WARM)));
const PERMISSIONS = [HOT_PERMISSION, "CAN_MANAGE_USERS", "CAN_DELETE_ANY_PROJECT", "CAN_ACCESS_ADMIN_PANEL"];
const permission = () => PERMISSIONS[Math.floor(Math.random() * PERMISSIONS.length)] as string;
const check = (userId: string, fullyConsistent = false) => ({
  userId,
  permission: permission(),
  ...(fullyConsistent && { fullyConsistent }),
});
const checkFrame = (fields: ReturnType<typeof check>) =>
  grpcFrame(toBinary(CheckPermissionRequestSchema, create(CheckPermissionRequestSchema, fields)));
const checksFrame = (checks: ReturnType<typeof check>[]) =>
  grpcFrame(toBinary(CheckPermissionsRequestSchema, create(CheckPermissionsRequestSchema, { checks })));
const batch = (user: () => string) => Array.from({ length: 10 }, () => check(user()));
/** Even warm users hold Researcher; the role writes add and take away Viewer, pass by pass over them. */
const roleWrite = (k: number) => ({
  assign: Math.floor(k / (WARM / 2)) % 2 === 0,
  userId: benchUserId(2 * (k % (WARM / 2))),
});

const KINDS: Kind[] = [
  {
    name: "grpc CheckPermission cached",
    transport: "grpc",
    path: () => CHECK_PATH,
    rate: 600,
    body: () => checkFrame(check(warmUser())),
  },
  {
    name: "grpc CheckPermission uncached",
    transport: "grpc",
    path: () => CHECK_PATH,
    rate: 100,
    body: () => checkFrame(check(randomUser())),
  },
  {
    name: "grpc CheckPermission fully_consistent",
    transport: "grpc",
    path: () => CHECK_PATH,
    rate: 20,
    body: () => checkFrame(check(warmUser(), true)),
  },
  {
    name: "grpc CheckPermissions×10 cached",
    transport: "grpc",
    path: () => `${SERVICE}/CheckPermissions`,
    rate: 60,
    body: () => checksFrame(batch(warmUser)),
  },
  {
    name: "grpc CheckPermissions×10 uncached",
    transport: "grpc",
    path: () => `${SERVICE}/CheckPermissions`,
    rate: 10,
    body: () => checksFrame(batch(randomUser)),
  },
  {
    name: "json CheckPermission cached",
    transport: "json",
    path: () => CHECK_PATH,
    rate: 100,
    body: () => JSON.stringify(check(warmUser())),
  },
  {
    name: "json CheckPermission uncached",
    transport: "json",
    path: () => CHECK_PATH,
    rate: 20,
    body: () => JSON.stringify(check(randomUser())),
  },
  {
    name: "json CheckPermissions×10",
    transport: "json",
    path: () => `${SERVICE}/CheckPermissions`,
    rate: 10,
    body: () => JSON.stringify({ checks: batch(Math.random() < 0.5 ? warmUser : randomUser) }),
  },
  {
    name: "grpc AssignRole/RevokeRole",
    transport: "grpc",
    path: (k) => `${SERVICE}/${roleWrite(k).assign ? "AssignRole" : "RevokeRole"}`,
    rate: 10,
    body: (k) => {
      const { assign, userId } = roleWrite(k);
      return assign
        ? grpcFrame(
            toBinary(AssignRoleRequestSchema, create(AssignRoleRequestSchema, { userId, role: "Viewer" })),
          )
        : grpcFrame(
            toBinary(RevokeRoleRequestSchema, create(RevokeRoleRequestSchema, { userId, role: "Viewer" })),
          );
    },
  },
  {
    name: "grpc UpdateProfile",
    transport: "grpc",
    path: () => `${SERVICE}/UpdateProfile`,
    rate: 4,
    body: (k) =>
      grpcFrame(
        toBinary(
          UpdateProfileRequestSchema,
          create(UpdateProfileRequestSchema, {
            userId: benchUserId(k % WARM),
            name: `Soak ${k}`,
            organisation: "Soak Org",
          }),
        ),
      ),
  },
  {
    name: "json AssignRole/RevokeRole",
    transport: "json",
    path: (k) => `${SERVICE}/${roleWrite(k).assign ? "AssignRole" : "RevokeRole"}`,
    rate: 3,
    // Odd warm users (they hold Viewer): Researcher added and taken away, so never the gRPC writes' users.
    body: (k) => JSON.stringify({ userId: benchUserId(2 * (k % (WARM / 2)) + 1), role: "Researcher" }),
  },
  {
    name: "json UpdateProfile",
    transport: "json",
    path: () => `${SERVICE}/UpdateProfile`,
    rate: 2,
    body: (k) => JSON.stringify({ userId: benchUserId((k * 7) % WARM), organisation: `Soak Org ${k}` }),
  },
];

interface LoadJob {
  grpcPort: number;
  httpPort: number;
  seconds: number;
  /** Progress lines this often. */
  everySeconds: number;
  scale: number;
}

/** What the load process prints: cumulative counts, one line per interval, then a last one with `done`. */
interface Progress {
  t: number;
  done?: boolean;
  calls: Record<string, number>;
  /** By code: "grpc-status 14", "HTTP 503 unavailable", "error ECONNRESET", … */
  errors: Record<string, number>;
  firstErrors: string[];
  /** Calls not sent because that kind already had MAX_IN_FLIGHT calls in flight (the service falling behind). */
  skipped: number;
}

const MAX_IN_FLIGHT = 64;

/** The load process: each kind paced at its rate (open loop, at most MAX_IN_FLIGHT in flight per kind). */
async function loadProcess(job: LoadJob): Promise<void> {
  const sessions = Array.from({ length: 2 }, () =>
    http2.connect(`http://127.0.0.1:${job.grpcPort}`, {
      createConnection: () => net.connect({ host: "127.0.0.1", port: job.grpcPort, noDelay: true }),
    }),
  );
  for (const session of sessions) session.on("error", () => {});
  const progress: Progress = { t: 0, calls: {}, errors: {}, firstErrors: [], skipped: 0 };
  const fail = (code: string, detail: string) => {
    progress.errors[code] = (progress.errors[code] ?? 0) + 1;
    if (progress.firstErrors.length < 5) progress.firstErrors.push(`${code}: ${detail}`);
  };
  const finished = (kind: Kind) => {
    progress.calls[kind.name] = (progress.calls[kind.name] ?? 0) + 1;
  };
  let sent = 0;
  const grpcHeaders = { ":method": "POST", "content-type": "application/grpc", te: "trailers" };
  const grpcCall = (kind: Kind, path: string, body: Buffer) =>
    new Promise<void>((resolve) => {
      const session = sessions[sent++ % sessions.length] as http2.ClientHttp2Session;
      unaryCall(session, { ...grpcHeaders, ":path": path }, body, (answer) => {
        finished(kind);
        if (!answerOk(answer)) {
          fail(
            `grpc-status ${answer.grpcStatus ?? `none (HTTP ${answer.status})`}`,
            `${path}: ${answer.message}`,
          );
        }
        resolve();
      });
    });
  const jsonCall = async (kind: Kind, path: string, body: string) => {
    try {
      const response = await fetch(`http://127.0.0.1:${job.httpPort}${path}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
      });
      const text = await response.text();
      if (response.status !== 200) {
        const code = (JSON.parse(text) as { code?: string }).code ?? "";
        fail(`HTTP ${response.status} ${code}`, `${path}: ${text.slice(0, 200)}`);
      }
    } catch (error) {
      fail(`error ${(error as { cause?: { code?: string } }).cause?.code ?? (error as Error).message}`, path);
    }
    finished(kind);
  };

  const started = performance.now();
  const state = KINDS.map(() => ({ launched: 0, inFlight: 0 }));
  const pending = new Set<Promise<void>>();
  let nextReport = job.everySeconds;
  await new Promise<void>((resolve) => {
    const tick = setInterval(() => {
      const elapsed = (performance.now() - started) / 1000;
      if (elapsed >= nextReport) {
        process.stdout.write(`${JSON.stringify({ ...progress, t: elapsed })}\n`);
        nextReport += job.everySeconds;
      }
      if (elapsed >= job.seconds) {
        clearInterval(tick);
        resolve();
        return;
      }
      KINDS.forEach((kind, i) => {
        const s = state[i] as { launched: number; inFlight: number };
        const due = Math.floor(elapsed * kind.rate * job.scale);
        while (s.launched < due) {
          const k = s.launched++;
          if (s.inFlight >= MAX_IN_FLIGHT) {
            progress.skipped++;
            continue;
          }
          const body = kind.body(k);
          s.inFlight++;
          const call =
            kind.transport === "grpc"
              ? grpcCall(kind, kind.path(k), body as Buffer)
              : jsonCall(kind, kind.path(k), body as string);
          const tracked = call.finally(() => {
            s.inFlight--;
            pending.delete(tracked);
          });
          pending.add(tracked);
        }
      });
    }, 10);
  });
  await Promise.all(pending);
  for (const session of sessions) session.close();
  process.stdout.write(
    `${JSON.stringify({ ...progress, t: (performance.now() - started) / 1000, done: true })}\n`,
  );
}

interface Sample {
  t: number;
  rssMb: number;
  rssMetricsMb: number;
  heapUsedMb: number;
  heapTotalMb: number;
  fds: number;
  fdsMetrics: number;
  eventLoopP99Ms: number;
  eventLoopMaxMs: number;
  cachedUsers: number;
  calls: number;
  errors: number;
}

/** One scrape of /metrics: the values of unlabelled series by name. */
async function scrape(httpPort: number): Promise<Map<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  const values = new Map<string, number>();
  for (const line of text.split("\n")) {
    const match = /^([a-z_0-9]+) (\S+)$/.exec(line);
    if (match?.[1] && match[2]) values.set(match[1], Number(match[2]));
  }
  return values;
}

function openFds(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return Number.NaN;
  }
}

/** Least-squares slope of value over t, per minute. */
function slopePerMinute(points: { t: number; value: number }[]): number {
  const n = points.length;
  if (n < 2) return Number.NaN;
  const mt = points.reduce((a, p) => a + p.t, 0) / n;
  const mv = points.reduce((a, p) => a + p.value, 0) / n;
  let num = 0;
  let den = 0;
  for (const p of points) {
    num += (p.t - mt) * (p.value - mv);
    den += (p.t - mt) ** 2;
  }
  return (num / den) * 60;
}

interface Series {
  name: string;
  unit: string;
  value(sample: Sample): number;
  /**
   * What a window is summed up by: its median, or its minimum (for the heap, whose samples saw-tooth
   * between collections: the minimum is about what a full GC leaves, the figure a leak moves).
   */
  statistic: "median" | "minimum";
  /** The tolerance in words, and the verdict. */
  goal: string;
  flat(stats: { first: number; second: number; last: number; slope: number }): boolean;
}

const SERIES: Series[] = [
  {
    name: "RSS",
    unit: "MB",
    value: (s) => s.rssMb,
    statistic: "median",
    goal: "flat: last ≤ 1.10× second window, slope ≤ 1%/min of it",
    flat: ({ second, last, slope }) => last <= 1.1 * second && slope <= 0.01 * second,
  },
  {
    name: "heap used",
    unit: "MB",
    value: (s) => s.heapUsedMb,
    statistic: "minimum",
    goal: "flat: last ≤ 1.10× second window, slope of the minima ≤ 1%/min of it",
    flat: ({ second, last, slope }) => last <= 1.1 * second && slope <= 0.01 * second,
  },
  {
    name: "open file descriptors",
    unit: "fds",
    value: (s) => s.fds,
    statistic: "median",
    goal: "flat: last = second window ± 2",
    flat: ({ second, last }) => Math.abs(last - second) <= 2,
  },
  {
    name: "event-loop delay p99",
    unit: "ms",
    value: (s) => s.eventLoopP99Ms,
    statistic: "median",
    goal: "flat: last ≤ 1.25× second window or + 2 ms",
    flat: ({ second, last }) => last <= Math.max(1.25 * second, second + 2),
  },
];

/** The rows for each series: last window against the second (a window is a minute, or a fifth of the run). */
function judge(samples: readonly Sample[]): Row[] {
  const tEnd = samples.at(-1)?.t ?? 0;
  const window = Math.min(60, tEnd / 5);
  const rows: Row[] = [];
  for (const series of SERIES) {
    const points = samples.map((s) => ({ t: s.t, value: series.value(s) }));
    const sum = (values: number[]) => (series.statistic === "median" ? median(values) : Math.min(...values));
    const within = (from: number, to: number) =>
      sum(points.filter((p) => p.t > from && p.t <= to).map((p) => p.value));
    // The slope after the warm-up: over every sample, or over each window's minimum.
    const trend =
      series.statistic === "median"
        ? points.filter((p) => p.t > window)
        : Array.from({ length: Math.floor(tEnd / window) - 1 }, (_, i) => ({
            t: (i + 2) * window,
            value: within((i + 1) * window, (i + 2) * window),
          }));
    const stats = {
      first: within(0, window),
      second: within(window, 2 * window),
      last: within(tEnd - window, tEnd),
      slope: slopePerMinute(trend),
    };
    const values = points.filter((p) => p.t > window).map((p) => p.value);
    const flat = series.flat(stats);
    const digits = series.unit === "fds" ? 0 : 1;
    rows.push({
      name: `${series.name}, last window ${series.statistic} (${flat ? "flat" : "NOT flat"})`,
      figure: stats.last,
      unit: series.unit,
      reference: { name: "second window", figure: stats.second },
      ratio: stats.last / stats.second,
      goal: series.goal,
      pass: flat,
      note: `first window ${stats.first.toFixed(digits)}; slope after warm-up ${stats.slope >= 0 ? "+" : ""}${stats.slope.toFixed(2)} ${series.unit}/min; samples after warm-up ${Math.min(...values).toFixed(digits)}–${Math.max(...values).toFixed(digits)}; windows of ${window.toFixed(0)} s`,
    });
  }
  return rows;
}

/** SOAK_CSV=bench/results/soak-….csv: the rows of an earlier run judged again from its samples. */
function rejudge(file: string): Row[] {
  const [header, ...lines] = readFileSync(file, "utf8").trim().split("\n");
  const columns = (header ?? "").split(",");
  const samples = lines.map((line) => {
    const cells = new Map(line.split(",").map((cell, i) => [columns[i], Number(cell)]));
    const get = (name: string) => cells.get(name) ?? Number.NaN;
    return {
      t: get("t_s"),
      rssMb: get("rss_mb_proc"),
      rssMetricsMb: get("rss_mb_metrics"),
      heapUsedMb: get("heap_used_mb"),
      heapTotalMb: get("heap_total_mb"),
      fds: get("fds_proc"),
      fdsMetrics: get("fds_metrics"),
      eventLoopP99Ms: get("eventloop_p99_ms"),
      eventLoopMaxMs: get("eventloop_max_ms"),
      cachedUsers: get("cached_users"),
      calls: get("calls_in_interval"),
      errors: get("errors_in_interval"),
    } satisfies Sample;
  });
  const calls = samples.reduce((a, s) => a + s.calls, 0);
  const errors = samples.reduce((a, s) => a + s.errors, 0);
  return [
    ...judge(samples),
    { name: "calls sampled", figure: calls, unit: "calls", note: `judged again from ${file}` },
    { name: "errors", figure: errors, unit: "calls", goal: "0", pass: errors === 0 },
  ];
}

async function run(context: BenchContext): Promise<Row[]> {
  if (process.env.SOAK_CSV) return rejudge(process.env.SOAK_CSV);
  if (!context.postgres) {
    return [{ name: "soak", figure: Number.NaN, unit: "", note: "skipped: no PostgreSQL" }];
  }
  context.log(`soak: seeding ${USERS.toLocaleString("en-GB")} users`);
  const database = await usersDatabase(context, "PostgreSQL", USERS, "soak");
  const service = await startService({
    env: {
      DATABASE_URL: database.url,
      AUTHZ_MIGRATE_ON_START: "false",
      AUTHZ_USER_CACHE_SIZE: String(CACHE_SIZE),
    },
  });
  const samples: Sample[] = [];
  let last: Progress | undefined;
  try {
    await checkOnce(
      service.port,
      toBinary(
        CheckPermissionRequestSchema,
        create(CheckPermissionRequestSchema, { userId: HOT_USER, permission: HOT_PERMISSION }),
      ),
    );
    const jobFile = join(tmpDirectory(), "soak-job.json");
    writeFileSync(
      jobFile,
      JSON.stringify({
        grpcPort: service.port,
        httpPort: service.httpPort,
        seconds: SECONDS,
        everySeconds: SAMPLE_SECONDS,
        scale: SCALE,
      } satisfies LoadJob),
    );
    const [command, args] = pinned(LOAD_CPU, process.execPath, [import.meta.filename, jobFile]);
    context.log(`soak: ${SECONDS} s of mixed load, sampling every ${SAMPLE_SECONDS} s`);
    const loader = runCommand(command, args, { encoding: "utf8", maxBuffer: 64 * 1024 * 1024 });
    let latest: Progress = { t: 0, calls: {}, errors: {}, firstErrors: [], skipped: 0 };
    let partial = "";
    loader.child.stdout?.on("data", (chunk: string) => {
      const lines = (partial + String(chunk)).split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) {
        if (line.startsWith("{")) latest = JSON.parse(line) as Progress;
      }
    });
    const started = performance.now();
    let running = true;
    const done = loader.finally(() => {
      running = false;
    });
    const total = (counts: Record<string, number>) => Object.values(counts).reduce((a, b) => a + b, 0);
    while (running) {
      const due = started + (samples.length + 1) * SAMPLE_SECONDS * 1000;
      await Promise.race([
        done,
        new Promise((resolve) => setTimeout(resolve, Math.max(0, due - performance.now()))),
      ]);
      if (!running) break;
      const metrics = await scrape(service.httpPort);
      const mb = (name: string) => (metrics.get(name) ?? Number.NaN) / 2 ** 20;
      const ms = (name: string) => (metrics.get(name) ?? Number.NaN) * 1000;
      samples.push({
        t: (performance.now() - started) / 1000,
        rssMb: rssMb(service.pid),
        rssMetricsMb: mb("process_resident_memory_bytes"),
        heapUsedMb: mb("nodejs_heap_size_used_bytes"),
        heapTotalMb: mb("nodejs_heap_size_total_bytes"),
        fds: openFds(service.pid),
        fdsMetrics: metrics.get("process_open_fds") ?? Number.NaN,
        eventLoopP99Ms: ms("nodejs_eventloop_lag_p99_seconds"),
        eventLoopMaxMs: ms("nodejs_eventloop_lag_max_seconds"),
        cachedUsers: metrics.get("authz_cache_users") ?? Number.NaN,
        calls: total(latest.calls),
        errors: total(latest.errors),
      });
      if (samples.length % Math.round(60 / SAMPLE_SECONDS) === 0) {
        const s = samples.at(-1) as Sample;
        context.log(
          `soak ${s.t.toFixed(0)} s: RSS ${s.rssMb.toFixed(0)} MB, heap ${s.heapUsedMb.toFixed(0)} MB, ${s.fds} fds, loop p99 ${s.eventLoopP99Ms.toFixed(1)} ms, ${s.calls} calls, ${s.errors} errors`,
        );
      }
    }
    const { stdout } = await done;
    last = stdout
      .split("\n")
      .filter((line) => line.startsWith("{"))
      .map((line) => JSON.parse(line) as Progress)
      .find((p) => p.done);
  } finally {
    await service.stop();
    await database.drop();
  }
  if (!last) throw new Error("the load process printed no summary");

  const csv = writeCsv(samples);
  const rows = judge(samples);
  const calls = Object.values(last.calls).reduce((a, b) => a + b, 0);
  const errors = Object.values(last.errors).reduce((a, b) => a + b, 0);
  rows.push({
    name: `calls over ${last.t.toFixed(0)} s (gRPC and Connect JSON, checks and writes)`,
    figure: calls / last.t,
    unit: "calls/s",
    note: `${calls.toLocaleString("en-GB")} calls: ${Object.entries(last.calls)
      .map(([name, n]) => `${name} ${n.toLocaleString("en-GB")}`)
      .join(", ")}; ${last.skipped} not sent (service behind)`,
  });
  rows.push({
    name: "errors",
    figure: errors,
    unit: "calls",
    goal: "0",
    pass: errors === 0,
    note:
      errors === 0
        ? `none; samples in ${csv}`
        : `${JSON.stringify(last.errors)}; first: ${last.firstErrors.join(" | ")}; samples in ${csv}`,
  });
  return rows;
}

/** bench/results/soak-<date>.csv (not committed); returns its repo path. */
function writeCsv(samples: readonly Sample[]): string {
  const dir = join(import.meta.dirname, "..", "results");
  mkdirSync(dir, { recursive: true });
  const name = `soak-${new Date().toISOString().slice(0, 16).replace(":", "")}.csv`;
  const header =
    "t_s,calls_in_interval,errors_in_interval,rss_mb_proc,rss_mb_metrics,heap_used_mb,heap_total_mb,fds_proc,fds_metrics,eventloop_p99_ms,eventloop_max_ms,cached_users";
  const lines = samples.map((s, i) =>
    [
      s.t.toFixed(1),
      s.calls - (samples[i - 1]?.calls ?? 0),
      s.errors - (samples[i - 1]?.errors ?? 0),
      s.rssMb.toFixed(1),
      s.rssMetricsMb.toFixed(1),
      s.heapUsedMb.toFixed(1),
      s.heapTotalMb.toFixed(1),
      s.fds,
      s.fdsMetrics,
      s.eventLoopP99Ms.toFixed(2),
      s.eventLoopMaxMs.toFixed(2),
      s.cachedUsers,
    ].join(","),
  );
  writeFileSync(join(dir, name), `${[header, ...lines].join("\n")}\n`);
  return `bench/results/${name}`;
}

if (import.meta.main) {
  await loadProcess(JSON.parse(readFileSync(process.argv[2] ?? "", "utf8")) as LoadJob);
}
