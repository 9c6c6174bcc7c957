// A seeded, bounded fuzz run against a real `flip-authz serve` process: more than 10,000 malformed requests
// across both listeners (random and truncated frames, wrong content types, invalid UTF-8, unknown and
// repeated fields, huge repeated fields, deep JSON, garbage on the raw sockets). Every one must be answered
// or closed, never with INTERNAL; the process stays up, logs no error, keeps its memory bounded, answers a
// real call afterwards and exits 0 on SIGTERM; and the tables are exactly as they were.
//
// FUZZ_SEED picks another sequence (the seed is in the test's name, to reproduce a failure).

import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { Agent, request as httpRequest } from "node:http";
import { type ClientHttp2Session, connect as http2Connect } from "node:http2";
import { connect as netConnect } from "node:net";
import { DatabaseSync } from "node:sqlite";
import { create, toBinary } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthzService, CheckPermissionsRequestSchema } from "../../gen/flip/authz/v1/authz_pb.ts";
import { methodPath } from "../../src/rpc/method-name.ts";
import { BIN } from "../helpers/cli.ts";
import { tempDir } from "../helpers/keys.ts";
import { freePort } from "../helpers/ports.ts";

const SEED = Number(process.env.FUZZ_SEED ?? 20261201);
const PER_KIND = 700;
const CONCURRENCY = 24;
const TIMEOUT_MS = 15_000;
const USER = "3c9d4f1e-8b2a-4c6d-9e0f-1a2b3c4d5e6f";

/** mulberry32: a small seeded PRNG, so a failing run can be replayed. */
function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  return {
    int,
    pick: <T>(items: readonly T[]): T => items[int(items.length)] as T,
    bytes: (n: number) => Buffer.from(Array.from({ length: n }, () => int(256))),
  };
}

type Rng = ReturnType<typeof prng>;

/** What came back: an HTTP status (and gRPC status when there was one), or the connection closed. */
type Outcome =
  | { kind: "answered"; status: number; grpcStatus?: string; grpcMessage?: string }
  | { kind: "closed"; reason: string };

const METHODS = AuthzService.methods.map(methodPath);

/** A gRPC length-prefixed message: flag, 4-byte length, payload (the length may lie). */
function frame(payload: Buffer, compressed = false, declared = payload.length): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt8(compressed ? 1 : 0, 0);
  head.writeUInt32BE(declared >>> 0, 1);
  return Buffer.concat([head, payload]);
}

/** Protobuf wire bytes with fields the schema does not have, and its own fields repeated or mistyped. */
function oddProtobuf(rng: Rng): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i < 1 + rng.int(8); i++) {
    const field = rng.pick([1, 2, 3, 4, 5, 15, 16, 99, 2047, 536870911]);
    const wire = rng.pick([0, 1, 2, 5, 3, 4, 6, 7]);
    const tag = Buffer.from(varint(field * 8 + wire));
    if (wire === 0) parts.push(tag, Buffer.from(varint(rng.int(2 ** 31))));
    else if (wire === 1) parts.push(tag, rng.bytes(8));
    else if (wire === 5) parts.push(tag, rng.bytes(4));
    else if (wire === 2) {
      const body = rng.int(3) === 0 ? Buffer.from([0xff, 0xfe, 0xc3, 0x28]) : rng.bytes(rng.int(40));
      parts.push(tag, Buffer.from(varint(rng.int(4) === 0 ? body.length + 50 : body.length)), body);
    } else parts.push(tag);
  }
  return Buffer.concat(parts);
}

function varint(value: number): number[] {
  const out: number[] = [];
  let v = value;
  while (v > 127) {
    out.push((v & 127) | 128);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return out;
}

function deepJson(rng: Rng): string {
  const depth = 1000 + rng.int(200_000);
  return rng.int(2) === 0
    ? `${"[".repeat(depth)}1${"]".repeat(depth)}`
    : `{"userId":${'{"a":'.repeat(depth)}1${"}".repeat(depth)}}`;
}

/** One malformed HTTP/1.1 request for the Connect/gRPC-Web listener. */
function httpCase(
  rng: Rng,
  kind: number,
): { path: string; method: string; headers: Record<string, string>; body: Buffer } {
  const path = rng.int(10) === 0 ? `/${rng.bytes(6).toString("hex")}` : rng.pick(METHODS);
  const json = { "content-type": "application/json" };
  switch (kind) {
    case 0: // random bytes as a binary Connect request
      return {
        path,
        method: "POST",
        headers: { "content-type": "application/proto" },
        body: rng.bytes(rng.int(300)),
      };
    case 1: // invalid UTF-8 inside JSON strings
      return {
        path,
        method: "POST",
        headers: json,
        body: Buffer.concat([
          Buffer.from('{"userId":"'),
          Buffer.from([0xc3, 0x28, 0xa0, 0xa1, 0xff]),
          Buffer.from('"}'),
        ]),
      };
    case 2: // unknown fields, repeated keys, wrong types
      return {
        path,
        method: "POST",
        headers: json,
        body: Buffer.from(
          rng.pick([
            `{"userId":"${USER}","userId":"x","permission":7}`,
            `{"nope":1,"checks":[{"userId":null,"permission":{"a":1}}]}`,
            `{"roles":"Admin","pageSize":"-1","after":1e400}`,
            `{"checks":[${Array.from({ length: 120 }, () => `{"userId":"${USER}","permission":"CAN_MANAGE_USERS"}`).join(",")}]}`,
            `{"name":"${"\\u0000"}","organisation":${JSON.stringify("x".repeat(300))},"userId":"${USER}"}`,
            `[1,2,3]`,
            `"just a string"`,
            `{"userId":"${USER}",`,
          ]),
        ),
      };
    case 3: // deep JSON
      return { path, method: "POST", headers: json, body: Buffer.from(deepJson(rng)) };
    case 4: // wrong content types and methods
      return {
        path,
        method: rng.pick(["POST", "PUT", "GET", "DELETE", "PATCH", "OPTIONS"]),
        headers: {
          "content-type": rng.pick([
            "text/plain",
            "application/xml",
            "multipart/form-data; boundary=x",
            "application/json; charset=latin1",
            "application/grpc+json",
            "",
          ]),
          "connect-protocol-version": rng.pick(["1", "2", "x"]),
        },
        body: rng.bytes(rng.int(100)),
      };
    case 5: // gRPC-Web: random, truncated or lying frames
      return {
        path,
        method: "POST",
        headers: { "content-type": rng.pick(["application/grpc-web+proto", "application/grpc-web-text"]) },
        body: rng.pick([
          () => frame(rng.bytes(rng.int(64))),
          () => frame(rng.bytes(10), false, 100 + rng.int(1000)),
          () => frame(rng.bytes(20), true),
          () => rng.bytes(rng.int(4)),
          () => frame(oddProtobuf(rng)),
        ])(),
      };
    default: // huge repeated field: far past AUTHZ_MAX_REQUEST_BYTES, or a batch past AUTHZ_MAX_BATCH
      return {
        path: `/${AuthzService.typeName}/CheckPermissions`,
        method: "POST",
        headers: { "content-type": "application/proto" },
        body: rng.int(4) === 0 ? HUGE_BATCH : BIG_BATCH,
      };
  }
}

const HUGE_BATCH = Buffer.from(
  toBinary(
    CheckPermissionsRequestSchema,
    create(CheckPermissionsRequestSchema, {
      checks: Array.from({ length: 40_000 }, () => ({ userId: USER, permission: "CAN_MANAGE_USERS" })),
    }),
  ),
);
const BIG_BATCH = Buffer.from(
  toBinary(
    CheckPermissionsRequestSchema,
    create(CheckPermissionsRequestSchema, {
      checks: Array.from({ length: 500 }, () => ({ userId: USER, permission: "CAN_MANAGE_USERS" })),
    }),
  ),
);

function sendHttp(agent: Agent, port: number, c: ReturnType<typeof httpCase>): Promise<Outcome> {
  return new Promise((resolve) => {
    const req = httpRequest(
      {
        host: "127.0.0.1",
        port,
        path: c.path,
        method: c.method,
        // A random body can be a valid WatchChanges from now: an endless stream, ended by this deadline.
        headers: { "connect-timeout-ms": "3000", "grpc-timeout": "3S", ...c.headers },
        agent,
        timeout: TIMEOUT_MS,
      },
      (response) => {
        // gRPC-Web sends a call's status in the headers only when there is no body; otherwise (an error
        // raised inside the handler included) it is in a trailer frame at the end of the body.
        const chunks: Buffer[] = [];
        let size = 0;
        response.on("data", (chunk: Buffer) => {
          if (size < 1 << 20) chunks.push(chunk);
          size += chunk.length;
        });
        response.on("end", () => {
          const trailer = grpcWebTrailer(
            String(response.headers["content-type"] ?? ""),
            Buffer.concat(chunks),
          );
          const grpcStatus = (response.headers["grpc-status"] as string | undefined) ?? trailer.grpcStatus;
          const grpcMessage = (response.headers["grpc-message"] as string | undefined) ?? trailer.grpcMessage;
          resolve({
            kind: "answered",
            status: response.statusCode ?? 0,
            ...(grpcStatus !== undefined && { grpcStatus }),
            ...(grpcMessage !== undefined && { grpcMessage: percentDecoded(grpcMessage) }),
          });
        });
        response.on("error", (error) => resolve({ kind: "closed", reason: error.message }));
      },
    );
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", (error) =>
      resolve(
        error.message === "timeout"
          ? { kind: "closed", reason: "TIMEOUT" }
          : { kind: "closed", reason: error.message },
      ),
    );
    req.end(c.body);
  });
}

function percentDecoded(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** The status in a gRPC-Web body's trailer frame (flag 0x80), if the body is gRPC-Web and has one. */
function grpcWebTrailer(contentType: string, body: Buffer): { grpcStatus?: string; grpcMessage?: string } {
  if (!contentType.startsWith("application/grpc-web")) return {};
  const bytes = contentType.startsWith("application/grpc-web-text")
    ? Buffer.from(body.toString("latin1"), "base64")
    : body;
  for (let at = 0; at + 5 <= bytes.length; ) {
    const length = bytes.readUInt32BE(at + 1);
    if (((bytes[at] ?? 0) & 0x80) !== 0) {
      const fields = new Map(
        bytes
          .subarray(at + 5, at + 5 + length)
          .toString("utf8")
          .split("\r\n")
          .map((line) => [
            line.slice(0, line.indexOf(":")).trim().toLowerCase(),
            line.slice(line.indexOf(":") + 1).trim(),
          ]),
      );
      return {
        ...(fields.has("grpc-status") && { grpcStatus: fields.get("grpc-status") }),
        ...(fields.has("grpc-message") && { grpcMessage: fields.get("grpc-message") }),
      };
    }
    at += 5 + length;
  }
  return {};
}

/** One malformed gRPC call on an HTTP/2 session (h2c). */
function grpcCase(rng: Rng, kind: number): { headers: Record<string, string>; body: Buffer } {
  const path = rng.int(10) === 0 ? `/${rng.bytes(6).toString("hex")}/X` : rng.pick(METHODS);
  // A random body can be a valid WatchChanges from now: an endless stream, ended by this deadline.
  const base = {
    ":method": "POST",
    ":path": path,
    "content-type": "application/grpc",
    te: "trailers",
    "grpc-timeout": "3S",
  };
  switch (kind) {
    case 0:
      return { headers: base, body: frame(rng.bytes(rng.int(300))) };
    case 1: // truncated: the frame declares more than is sent
      return { headers: base, body: frame(rng.bytes(rng.int(20)), false, 50 + rng.int(5000)) };
    case 2: // compressed flag without a negotiated (or valid) encoding
      return {
        headers: rng.int(2) === 0 ? base : { ...base, "grpc-encoding": rng.pick(["gzip", "br", "bogus"]) },
        body: frame(rng.bytes(rng.int(100)), true),
      };
    case 3:
      return {
        headers: {
          ...base,
          "content-type": rng.pick(["application/json", "text/plain", "application/grpc+json", ""]),
        },
        body: frame(rng.bytes(rng.int(50))),
      };
    case 4: // unknown and repeated fields, bad UTF-8 in strings, lying lengths inside the message
      return { headers: base, body: frame(oddProtobuf(rng)) };
    case 5: // several messages on a unary call, or garbage after the frame
      return {
        headers: base,
        body: Buffer.concat([frame(oddProtobuf(rng)), frame(oddProtobuf(rng)), rng.bytes(rng.int(3))]),
      };
    default: // huge repeated field
      return {
        headers: { ...base, ":path": `/${AuthzService.typeName}/CheckPermissions` },
        body: frame(rng.int(4) === 0 ? HUGE_BATCH : BIG_BATCH),
      };
  }
}

function sendGrpc(session: ClientHttp2Session, c: ReturnType<typeof grpcCase>): Promise<Outcome> {
  return new Promise((resolve) => {
    let settled = false;
    const done = (outcome: Outcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(outcome);
    };
    const timer = setTimeout(() => {
      stream.close();
      done({ kind: "closed", reason: "TIMEOUT" });
    }, TIMEOUT_MS);
    const stream = session.request(c.headers);
    let status = 0;
    let grpcStatus: string | undefined;
    let grpcMessage: string | undefined;
    const read = (headers: Record<string, unknown>) => {
      grpcStatus = (headers["grpc-status"] as string | undefined) ?? grpcStatus;
      const message = headers["grpc-message"] as string | undefined;
      if (message !== undefined) grpcMessage = percentDecoded(message);
    };
    stream.on("response", (headers) => {
      status = Number(headers[":status"]);
      read(headers);
    });
    stream.on("trailers", read);
    stream.on("data", () => {});
    const answered = (): Outcome => ({
      kind: "answered",
      status,
      ...(grpcStatus !== undefined && { grpcStatus }),
      ...(grpcMessage !== undefined && { grpcMessage }),
    });
    const ended = (): Outcome =>
      status !== 0 ? answered() : { kind: "closed", reason: `stream closed (rst ${stream.rstCode})` };
    stream.on("end", () => done(ended()));
    stream.on("close", () => done(ended()));
    stream.on("error", (error) => done({ kind: "closed", reason: error.message }));
    stream.end(c.body);
  });
}

/** Garbage straight onto a socket: a malformed HTTP/1.1 request, or a broken HTTP/2 preface. */
function sendRaw(port: number, bytes: Buffer): Promise<Outcome> {
  return new Promise((resolve) => {
    const socket = netConnect(port, "127.0.0.1");
    let answer = "";
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ kind: "closed", reason: "TIMEOUT" });
    }, TIMEOUT_MS);
    socket.on("connect", () => socket.end(bytes));
    socket.on("data", (chunk: Buffer) => (answer += chunk.toString("latin1")));
    socket.on("error", () => {});
    socket.on("close", () => {
      clearTimeout(timer);
      const status = /^HTTP\/1\.1 (\d{3})/.exec(answer)?.[1];
      resolve(status ? { kind: "answered", status: Number(status) } : { kind: "closed", reason: "closed" });
    });
  });
}

/** Runs `tasks` with at most `limit` in flight. */
async function pool<T>(tasks: (() => Promise<T>)[], limit: number): Promise<T[]> {
  const results: T[] = new Array(tasks.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < tasks.length) {
        const i = next++;
        results[i] = await (tasks[i] as () => Promise<T>)();
      }
    }),
  );
  return results;
}

function rssBytes(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, "utf8").match(/^VmRSS:\s+(\d+) kB/m);
  return Number(line?.[1] ?? 0) * 1024;
}

/** The peak resident set size so far (VmHWM), in bytes. */
function peakRssBytes(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, "utf8").match(/^VmHWM:\s+(\d+) kB/m);
  return Number(line?.[1] ?? 0) * 1024;
}

/** nodejs_heap_size_used_bytes from the service's /metrics (NaN when it does not answer). */
async function heapUsedBytes(httpPort: number): Promise<number> {
  try {
    const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
    return Number(/^nodejs_heap_size_used_bytes (\S+)/m.exec(text)?.[1] ?? Number.NaN);
  } catch {
    return Number.NaN;
  }
}

const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(0);

function tableSnapshot(path: string): Record<string, unknown> {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    const snapshot: Record<string, unknown> = {};
    for (const table of [
      "permission",
      "roles",
      "role_permission",
      "user_role",
      "user_profile",
      "users_audit",
      "authz_change_log",
    ]) {
      snapshot[table] = db.prepare(`SELECT * FROM ${table} ORDER BY 1, 2`).all();
    }
    snapshot.revision = db.prepare("SELECT revision FROM authz_revision").all();
    return snapshot;
  } finally {
    db.close();
  }
}

describe(`fuzz, seed ${SEED}`, () => {
  let child: ChildProcess;
  let stdout = "";
  let stderr = "";
  let grpcPort: number;
  let httpPort: number;
  let dbPath: string;
  let exited: Promise<number | null>;

  beforeAll(async () => {
    dbPath = `${tempDir("flip-authz-fuzz-")}/fuzz.db`;
    [grpcPort, httpPort] = [await freePort(), await freePort()];
    child = spawn(process.execPath, [BIN, "serve"], {
      env: {
        PATH: process.env.PATH ?? "",
        DATABASE_URL: `sqlite:${dbPath}`,
        AUTHZ_GRPC_LISTEN: `127.0.0.1:${grpcPort}`,
        AUTHZ_HTTP_LISTEN: `127.0.0.1:${httpPort}`,
        AUTHZ_LOG_LEVEL: "warn",
        AUTHZ_SHUTDOWN_GRACE_MS: "2000",
        NODE_OPTIONS: "--max-old-space-size=192",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stdout?.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    exited = new Promise((resolve) => child.on("close", (code) => resolve(code)));
    for (let i = 0; i < 150; i++) {
      const ready = await fetch(`http://127.0.0.1:${httpPort}/readyz`).catch(() => undefined);
      if (ready?.status === 200) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  });

  afterAll(async () => {
    if (child.exitCode === null) child.kill("SIGKILL");
    await exited;
  });

  it("answers or closes every malformed request, never INTERNAL; stays up, bounded and unchanged", {
    timeout: 240_000,
  }, async () => {
    const rng = prng(SEED);
    // A real call first, so the caches are warm and the memory baseline is a serving process's.
    const warm = await fetch(`http://127.0.0.1:${httpPort}/flip.authz.v1.AuthzService/CheckPermission`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ userId: USER, permission: "CAN_MANAGE_USERS" }),
    });
    expect(warm.status).toBe(200);
    const before = tableSnapshot(dbPath);
    const rssBefore = rssBytes(child.pid as number);
    const heapBefore = await heapUsedBytes(httpPort);
    // The heap sampled once a second while the fuzz runs, for its peak in the summary.
    let heapPeak = heapBefore;
    const sampler = setInterval(() => {
      void heapUsedBytes(httpPort).then((used) => {
        if (used > heapPeak) heapPeak = used;
      });
    }, 1000);

    const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });
    const sessions = Array.from({ length: 4 }, () => http2Connect(`http://127.0.0.1:${grpcPort}`));
    for (const session of sessions) session.on("error", () => {});
    const session = (i: number) => {
      let s = sessions[i % sessions.length] as ClientHttp2Session;
      if (s.closed || s.destroyed) {
        s = http2Connect(`http://127.0.0.1:${grpcPort}`);
        s.on("error", () => {});
        sessions[i % sessions.length] = s;
      }
      return s;
    };

    /** `detail` describes a request in a failure message (so a failure can be replayed by hand). */
    const tasks: { listener: string; kind: string; detail?: () => string; run: () => Promise<Outcome> }[] =
      [];
    for (let kind = 0; kind < 7; kind++) {
      for (let i = 0; i < PER_KIND; i++) {
        const h = httpCase(rng, kind);
        tasks.push({
          listener: "http",
          kind: `http-${kind}`,
          detail: () =>
            `${h.method} ${h.path} ${JSON.stringify(h.headers)} ${h.body.subarray(0, 120).toString("hex")}`,
          run: () => sendHttp(agent, httpPort, h),
        });
        const g = grpcCase(rng, kind);
        tasks.push({
          listener: "grpc",
          kind: `grpc-${kind}`,
          detail: () => `${JSON.stringify(g.headers)} ${g.body.subarray(0, 120).toString("hex")}`,
          run: () => sendGrpc(session(tasks.length), g),
        });
      }
    }
    for (let i = 0; i < 200; i++) {
      const garbage =
        rng.int(2) === 0
          ? rng.bytes(1 + rng.int(200))
          : Buffer.from(`GET /${"x".repeat(rng.int(20000))} HTTP/1.1\r\nHost: \x01\r\n\r\n`);
      tasks.push({ listener: "http", kind: "http-raw", run: () => sendRaw(httpPort, garbage) });
      const preface = Buffer.concat([
        Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").subarray(0, rng.int(24)),
        rng.bytes(rng.int(100)),
      ]);
      tasks.push({ listener: "grpc", kind: "grpc-raw", run: () => sendRaw(grpcPort, preface) });
    }
    // Interleave the kinds so each listener sees them mixed.
    for (let i = tasks.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [tasks[i], tasks[j]] = [tasks[j] as (typeof tasks)[number], tasks[i] as (typeof tasks)[number]];
    }
    expect(tasks.length).toBeGreaterThanOrEqual(10_000);

    // In two halves: a process that keeps what it is sent grows again in the second; a bounded one does not.
    const fuzzStarted = performance.now();
    const half = Math.floor(tasks.length / 2);
    const outcomes = await pool(
      tasks.slice(0, half).map((task) => task.run),
      CONCURRENCY,
    );
    const rssHalf = rssBytes(child.pid as number);
    outcomes.push(
      ...(await pool(
        tasks.slice(half).map((task) => task.run),
        CONCURRENCY,
      )),
    );

    const fuzzSeconds = (performance.now() - fuzzStarted) / 1000;
    clearInterval(sampler);
    agent.destroy();
    for (const s of sessions) s.destroy();

    // The figures, printed before the assertions so a failing run shows them too: per kind sent, answered
    // and closed; what the answers were (HTTP status / gRPC status) per listener; memory; duration.
    const byKind = new Map<string, { sent: number; answered: number }>();
    const codes = new Map<string, number>();
    outcomes.forEach((o, i) => {
      const task = tasks[i] as (typeof tasks)[number];
      const counts = byKind.get(task.kind) ?? { sent: 0, answered: 0 };
      counts.sent++;
      if (o.kind === "answered") {
        counts.answered++;
        const code = `${task.listener} HTTP ${o.status}${o.grpcStatus === undefined ? "" : ` grpc-status ${o.grpcStatus}`}`;
        codes.set(code, (codes.get(code) ?? 0) + 1);
      }
      byKind.set(task.kind, counts);
    });
    const totalAnswered = outcomes.filter((o) => o.kind === "answered").length;
    const rssAfterRun = rssBytes(child.pid as number);
    const heapAfter = await heapUsedBytes(httpPort);
    const summary = [
      `fuzz seed ${SEED}: ${outcomes.length} requests in ${fuzzSeconds.toFixed(1)} s, ${totalAnswered} answered, ` +
        `${outcomes.length - totalAnswered} closed`,
      `  per kind (sent/answered): ${[...byKind.entries()]
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([kind, c]) => `${kind} ${c.sent}/${c.answered}`)
        .join(", ")}`,
      `  answers: ${[...codes.entries()]
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([code, n]) => `${code}: ${n}`)
        .join("; ")}`,
      `  RSS MiB: before ${mib(rssBefore)}, half ${mib(rssHalf)}, after ${mib(rssAfterRun)}, peak ${mib(peakRssBytes(child.pid as number))}; ` +
        `heap used MiB (/metrics): before ${mib(heapBefore)}, after ${mib(heapAfter)}, peak of 1 s samples ${mib(heapPeak)}`,
    ];

    const closedBy = new Map<string, number>();
    outcomes.forEach((o, i) => {
      if (o.kind === "closed") {
        const key = `${tasks[i]?.kind} ${o.reason.replace(/\d+/g, "N")}`;
        closedBy.set(key, (closedBy.get(key) ?? 0) + 1);
      }
    });
    summary.push(
      `  closed: ${[...closedBy.entries()]
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([reason, n]) => `${reason}: ${n}`)
        .join("; ")}`,
    );
    console.log(summary.join("\n"));
    const timeouts = outcomes.flatMap((o, i) =>
      o.kind === "closed" && o.reason === "TIMEOUT"
        ? [`${tasks[i]?.kind}: ${tasks[i]?.detail?.() ?? ""}`]
        : [],
    );
    expect(timeouts, "requests neither answered nor closed").toEqual([]);
    // gRPC itself defines one INTERNAL for bad input: a message flagged compressed that cannot be
    // decompressed, or with no encoding to decompress it with (grpc-js, like grpc-go, answers it before any
    // handler runs, with a generic message; connect-node does the same for gRPC-Web, in the body's trailer
    // frame). Nothing else may be INTERNAL.
    const internal = outcomes.flatMap((o, i) =>
      o.kind === "answered" &&
      (o.status === 500 || o.grpcStatus === "13") &&
      !(tasks[i]?.kind === "grpc-2" && o.grpcMessage === "Failed to decompress message") &&
      !(
        tasks[i]?.kind === "http-5" &&
        o.grpcMessage === "received compressed envelope, but do not know how to decompress"
      )
        ? [{ kind: tasks[i]?.kind, outcome: o, request: tasks[i]?.detail?.() }]
        : [],
    );
    expect(internal, "requests answered INTERNAL").toEqual([]);
    // Each kind gets real answers, not only dropped connections. (node:http2 closes a session that sends
    // many rejected or reset streams with ENHANCE_YOUR_CALM: its flood protection, also a fine outcome.)
    const answeredKinds = new Set(
      outcomes.flatMap((o, i) => (o.kind === "answered" ? [tasks[i]?.kind] : [])),
    );
    expect(
      [...new Set(tasks.map((t) => t.kind))].filter(
        (kind) => !answeredKinds.has(kind) && !kind.endsWith("-raw"),
      ),
    ).toEqual([]);

    // Still up, still right, memory bounded, nothing written, nothing logged at error.
    expect(child.exitCode).toBeNull();
    const after = await fetch(`http://127.0.0.1:${httpPort}/flip.authz.v1.AuthzService/ListRoles`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    expect(after.status).toBe(200);
    expect(((await after.json()) as { roles: unknown[] }).roles).toHaveLength(3);
    const rssAfter = rssBytes(child.pid as number);
    // The heap is capped (NODE_OPTIONS below): a leak would have crashed the process. The young generation
    // and buffers grow to their working size in the first half and stay there.
    expect(rssAfter - rssHalf).toBeLessThan(96 * 2 ** 20);

    expect(tableSnapshot(dbPath)).toEqual(before);
    // Every line is JSON (stdout is not a terminal), so no error can hide in another format.
    const lines = stdout.split("\n").filter((line) => line !== "");
    expect(lines.filter((line) => !line.startsWith("{"))).toEqual([]);
    const errors = lines
      .map((line) => JSON.parse(line) as { level: number; msg: string })
      .filter((line) => typeof line.level !== "number" || line.level >= 50);
    expect(errors).toEqual([]);
    expect(stderr).toBe("");

    child.kill("SIGTERM");
    expect(await exited).toBe(0);
    const rows = Object.values(before).reduce<number>((n, rows) => n + (rows as unknown[]).length, 0);
    console.log(
      `fuzz seed ${SEED}: afterwards up and answering, RSS ${mib(rssAfter)} MiB (${mib(rssAfter - rssHalf)} MiB over the half), ` +
        `tables unchanged (${rows} rows in ${Object.keys(before).length} snapshots), no error logged, exit 0 on SIGTERM`,
    );
  });
});
