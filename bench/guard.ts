// The route guard's speed (issue 8), a scenario of `npm run bench` (`npm run bench -- guard`): decisions for
// a cached user with a valid token, each against a reference measured in the same run on the same Node,
// the server pinned to one core (taskset) and the load generator (h2load) to the other:
//   ext_authz Check        vs a no-op grpc-js Check handler          target ≥ 0.9×
//   /forward-auth (HTTP/1) vs a bare node:http handler answering 200  target ≥ 0.7×  (keep-alive, 64 in flight)
// Each pair runs ROUNDS times alternately, against servers started once; the medians are compared.
// Self-contained: it needs only h2load.
// BENCH_GUARD_ROUNDS (3), BENCH_GUARD_SECONDS (2; each round's length, after a warm-up of a third of it);
// BENCH_GUARD_PROFILE=<dir> profiles the service.

import { type ChildProcess, execFile, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { CheckRequestSchema, CheckResponseSchema } from "../gen/envoy/service/auth/v3/external_auth_pb.ts";
import { NIL_UUID } from "../src/authz/ids.ts";
import { loadConfig } from "../src/config.ts";
import { openStore } from "../src/store/index.ts";

const USER = "6f0c1f4e-2a53-4c7e-9d8b-0a1b2c3d4e5f";
const RESEARCHER_ROLE = "10b64ed0-bc90-4c01-9cc3-933c704905c1";
const ISSUER = "https://cognito-idp.eu-west-2.amazonaws.com/eu-west-2_Bench";
const ROUNDS = Number(process.env.BENCH_GUARD_ROUNDS ?? 3);
/**
 * Each measurement runs this long. A fixed count of requests (8,000 in `npm run bench`) took a fifth of a
 * second here, so connection setup and the CPU clock's 10 ms ticks weighed on every figure: /forward-auth's
 * median over three full runs ranged 0.50–0.86×.
 */
const SECONDS = Number(process.env.BENCH_GUARD_SECONDS ?? 2);
/** A directory: the service under load writes a V8 CPU profile there (node --cpu-prof). */
const PROFILE_DIR = process.env.BENCH_GUARD_PROFILE;
const run = promisify(execFile);

interface Measured {
  rate: number;
  perCpuSecond: number;
}

interface Ports {
  grpcPort: number;
  httpPort: number;
}

async function hasTaskset(): Promise<boolean> {
  try {
    await run("taskset", ["-c", "0", "true"]);
    return true;
  } catch {
    return false;
  }
}

/** `command` pinned to `core` when taskset is there. */
function pinned(pin: boolean, core: number, command: string, args: string[]): [string, string[]] {
  return pin ? ["taskset", ["-c", String(core), command, ...args]] : [command, args];
}

function startServer(
  pin: boolean,
  mode: string,
  env: Record<string, string>,
): Promise<Ports & { child: ChildProcess }> {
  const profile = mode === "app" && PROFILE_DIR ? ["--cpu-prof", `--cpu-prof-dir=${PROFILE_DIR}`] : [];
  const script = join(import.meta.dirname, "guard-server.ts");
  const [command, args] = pinned(pin, 1, process.execPath, [...profile, script, mode]);
  const child = spawn(command, args, {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  return new Promise((resolveStart, reject) => {
    let out = "";
    child.stdout?.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      const line = out.split("\n").find((l) => l.startsWith("{"));
      if (line) resolveStart({ ...(JSON.parse(line) as Ports), child });
    });
    child.once("exit", (code) => reject(new Error(`${mode} server exited with ${code}`)));
  });
}

async function stopServer(child: ChildProcess): Promise<void> {
  const exited = new Promise((done) => child.once("exit", done));
  child.kill("SIGTERM");
  await exited;
}

/** One h2load run of `seconds`: req/s and requests answered; every request must have succeeded with a 2xx. */
async function h2load(
  pin: boolean,
  args: string[],
  seconds: number,
): Promise<{ rate: number; requests: number }> {
  const duration = `${Math.round(seconds * 1000)}ms`;
  const [command, full] = pinned(pin, 0, "h2load", ["-D", duration, "-t", "1", ...args]);
  const { stdout } = await run(command, full, { encoding: "utf8", maxBuffer: 1 << 24 });
  const rate = /finished in [\d.]+\w+, ([\d.]+) req\/s/.exec(stdout);
  const counts = /requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed/.exec(stdout);
  // Timed runs count the status of requests still in flight at the end too: none may be anything but 2xx.
  const statuses = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(stdout);
  const done = Number(counts?.[1]);
  if (!rate?.[1] || !(done > 0) || Number(counts?.[2]) !== done || Number(counts?.[3]) !== 0) {
    throw new Error(`h2load failed:\n${stdout}`);
  }
  const others = Number(statuses?.[2]) + Number(statuses?.[3]) + Number(statuses?.[4]);
  if (!(Number(statuses?.[1]) >= done) || others !== 0) {
    throw new Error(`h2load: answers other than 2xx:\n${stdout}`);
  }
  return { rate: Number(rate[1]), requests: done };
}

const CLOCK_TICKS = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;

/** CPU time (user + system) a process has used so far, from /proc (Linux). */
function cpuSeconds(pid: number | undefined): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
  // utime and stime are fields 14 and 15 of stat; fields[0] here is field 3.
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

function grpcFrame(message: Uint8Array): Buffer {
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  Buffer.from(message).copy(frame, 5);
  return frame;
}

/** One real Check first: h2load counts an HTTP 200 as a success whatever the answer says. */
function checkOnce(port: number, request: Uint8Array): Promise<string> {
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  return new Promise((resolveCheck, reject) => {
    client.makeUnaryRequest(
      "/envoy.service.auth.v3.Authorization/Check",
      (bytes: Uint8Array) => Buffer.from(bytes),
      (bytes: Buffer) => fromBinary(CheckResponseSchema, bytes),
      request,
      (error, response) => {
        client.close();
        if (error || !response) return reject(error ?? new Error("no response"));
        const ok = response.httpResponse.case === "okResponse" ? response.httpResponse.value : undefined;
        resolveCheck(ok?.headers.find((h) => h.header?.key === "x-flip-user-id")?.header?.value ?? "denied");
      },
    );
  });
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

/** Runs the scenario and reports through `say`; returns false when a target was missed. */
export async function guardBench(say: (line?: string) => void): Promise<boolean> {
  const dir = mkdtempSync(join(tmpdir(), "authz-bench-guard-"));
  const databaseUrl = `sqlite:${join(dir, "bench.db")}`;
  const store = await openStore(loadConfig({ DATABASE_URL: databaseUrl }).database, { migrate: true });
  await store.assignRole(USER, RESEARCHER_ROLE, NIL_UUID);
  await store.close();

  const { privateKey, publicKey } = await generateKeyPair("RS256", { extractable: true });
  const jwksFile = join(dir, "jwks.json");
  writeFileSync(
    jwksFile,
    JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: "bench", alg: "RS256", use: "sig" }] }),
  );
  const token = await new SignJWT({ token_use: "access", client_id: "bench" })
    .setProtectedHeader({ alg: "RS256", kid: "bench" })
    .setSubject(USER)
    .setIssuer(ISSUER)
    .setIssuedAt()
    .setExpirationTime("2h")
    .sign(privateKey);
  const authorization = `Bearer ${token}`;
  const env = {
    DATABASE_URL: databaseUrl,
    AUTHZ_MIGRATE_ON_START: "false",
    AUTHZ_JWT_ISSUER: ISSUER,
    AUTHZ_JWKS_FILE: jwksFile,
    AUTHZ_ROUTES_FILE: resolve(import.meta.dirname, "../deploy/routes.yaml"),
    AUTHZ_LOG_LEVEL: "error",
  };

  // What Envoy sends for `POST /api/projects?draft=1` with a bearer token.
  const check = create(CheckRequestSchema, {
    attributes: {
      request: {
        time: { seconds: BigInt(Math.floor(Date.now() / 1000)) },
        http: {
          id: "13062949138423532446",
          method: "POST",
          path: "/api/projects?draft=1",
          host: "api.flip.example",
          scheme: "https",
          protocol: "HTTP/1.1",
          headers: {
            ":authority": "api.flip.example",
            ":method": "POST",
            ":path": "/api/projects?draft=1",
            ":scheme": "https",
            accept: "application/json",
            authorization,
            "content-type": "application/json",
            "user-agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
            "x-forwarded-proto": "https",
            "x-request-id": "0d6ac3b2-5c1e-4d1b-9a3c-7b8f2e1d0c9a",
          },
        },
      },
    },
  });
  const checkBytes = toBinary(CheckRequestSchema, check);
  const checkFile = join(dir, "check.bin");
  writeFileSync(checkFile, grpcFrame(checkBytes));

  const pin = await hasTaskset();
  const grpcLoad = (port: number) => [
    ...["-c", "4", "-m", "25", "-H", "content-type: application/grpc", "-H", "te: trailers", "-d", checkFile],
    `http://127.0.0.1:${port}/envoy.service.auth.v3.Authorization/Check`,
  ];
  const httpLoad = (port: number) => [
    ...[
      "--h1",
      "-c",
      "64",
      "-m",
      "1",
      "-H",
      "x-forwarded-method: POST",
      "-H",
      "x-forwarded-uri: /api/projects?draft=1",
    ],
    ...["-H", `authorization: ${authorization}`, `http://127.0.0.1:${port}/forward-auth`],
  ];

  // Each server starts once (the first time a round needs it) and serves every round of every row that
  // uses it: idle between its rounds, it takes nothing from the others' measurements.
  const started = new Map<string, Promise<Ports & { child: ChildProcess }>>();
  const serverFor = (mode: string) => {
    let server = started.get(mode);
    if (server === undefined) {
      server = startServer(pin, mode, env);
      started.set(mode, server);
    }
    return server;
  };
  const verified = new Set<(ports: Ports) => Promise<void>>();
  const measure = async (
    mode: string,
    load: (ports: Ports) => string[],
    verify?: (ports: Ports) => Promise<void>,
  ): Promise<Measured> => {
    const server = await serverFor(mode);
    if (verify && !verified.has(verify)) {
      await verify(server);
      verified.add(verify);
    }
    await h2load(pin, load(server), SECONDS / 3); // warm-up: JIT, caches, connections
    const cpuBefore = cpuSeconds(server.child.pid);
    const { rate, requests } = await h2load(pin, load(server), SECONDS);
    const cpu = cpuSeconds(server.child.pid) - cpuBefore;
    return { rate, perCpuSecond: requests / cpu };
  };
  const verifyCheck = async ({ grpcPort }: Ports) => {
    const user = await checkOnce(grpcPort, checkBytes);
    if (user !== USER) throw new Error(`ext_authz: the warm-up check answered ${user}`);
  };
  const verifyForwardAuth = async ({ httpPort }: Ports) => {
    const response = await fetch(`http://127.0.0.1:${httpPort}/forward-auth`, {
      headers: { "x-forwarded-method": "POST", "x-forwarded-uri": "/api/projects?draft=1", authorization },
    });
    if (response.status !== 200 || response.headers.get("x-flip-user-id") !== USER) {
      throw new Error(`/forward-auth: the warm-up request answered ${response.status}`);
    }
  };

  const rows = [
    {
      name: "ext_authz Check, cached user (4 connections × 25 streams)",
      reference: "no-op grpc-js Check handler",
      target: 0.9,
      run: () => measure("app", (p) => grpcLoad(p.grpcPort), verifyCheck),
      baseline: () => measure("noop-ext-authz", (p) => grpcLoad(p.grpcPort)),
    },
    {
      name: "/forward-auth, cached user (HTTP/1.1 keep-alive, 64 in flight)",
      reference: "bare node:http handler answering 200",
      target: 0.7,
      run: () => measure("app", (p) => httpLoad(p.httpPort), verifyForwardAuth),
      baseline: () => measure("noop-http", (p) => httpLoad(p.httpPort)),
    },
  ];

  say(
    `## Route guard (SQLite, deploy/routes.yaml; server ${pin ? "pinned to core 1, h2load to core 0 (taskset)" : "not pinned: no taskset"}; median of ${ROUNDS} alternating rounds of ${SECONDS} s)`,
  );
  say();
  say(
    "Throughput (req/s) is the target's measure; requests per CPU-second of the server process is also shown, because it does not depend on what else the machine is running.",
  );
  say();
  say("| scenario | measure | figure | reference | ratio | target | | each round's ratio |");
  say("|---|---|---|---|---|---|---|---|");
  const measureRows = async (): Promise<boolean> => {
    let passed = true;
    for (const row of rows) {
      const figures: Measured[] = [];
      const references: Measured[] = [];
      for (let round = 0; round < ROUNDS; round++) {
        references.push(await row.baseline());
        figures.push(await row.run());
      }
      for (const [measure, key] of [
        ["req/s", "rate"],
        ["req per CPU-second", "perCpuSecond"],
      ] as const) {
        const figure = median(figures.map((m) => m[key]));
        const reference = median(references.map((m) => m[key]));
        const ratio = figure / reference;
        const verdict = ratio >= row.target ? "PASS" : "FAIL";
        if (verdict === "FAIL" && key === "rate") passed = false;
        const rounds = figures
          .map((m, i) => (m[key] / (references[i]?.[key] ?? Number.NaN)).toFixed(2))
          .join(" ");
        say(
          `| ${row.name} vs ${row.reference} | ${measure} | ${figure.toFixed(0)} | ${reference.toFixed(0)} | ${ratio.toFixed(2)} | ≥ ${row.target} | ${verdict} | ${rounds} |`,
        );
      }
    }
    return passed;
  };
  try {
    const passed = await measureRows();
    say();
    return passed;
  } finally {
    const servers = await Promise.allSettled(started.values());
    for (const server of servers) if (server.status === "fulfilled") await stopServer(server.value.child);
  }
}
