// `flip-authz serve` as a real child process (Node 24, bin/flip-authz.js) on known ports, its log kept:
// for suites that freeze, kill and restart servers (upstreams and followers) as an operator would.

import { type ChildProcess, spawn } from "node:child_process";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { BIN } from "./cli.ts";
import { freePort } from "./ports.ts";

export interface ServeProcess {
  readonly name: string;
  readonly grpcPort: number;
  readonly httpPort: number;
  readonly grpcTarget: string;
  readonly httpBase: string;
  readonly pid: number;
  /** Every line it logged so far (pino JSON lines and anything else on stdout/stderr). */
  readonly logs: string[];
  /** The `msg` of every JSON log line so far. */
  messages(): string[];
  /** Sends a signal (SIGSTOP freezes it, SIGCONT thaws it). */
  signal(signal: NodeJS.Signals): void;
  /** SIGCONT (in case it is frozen), SIGTERM, SIGKILL after `graceMs`; resolves to the exit code. */
  stop(graceMs?: number): Promise<number | null>;
}

export interface ServeOptions {
  name: string;
  /** Ports to listen on (a restart reuses its predecessor's); free ones by default. */
  grpcPort?: number;
  httpPort?: number;
  /** The log message that says it is listening (default "flip-authz listening"). */
  ready?: string;
  /** https for the HTTP listener (when AUTHZ_TLS_* is set). */
  https?: boolean;
}

const running = new Set<ServeProcess>();
/** Every child spawned and not yet exited, including one still starting when its test gave up. */
const children = new Set<ChildProcess>();

/** Starts `flip-authz serve` with `env` and resolves once it logs that it listens. */
/** The log lines that are JSON objects, parsed (a serve process's stdout may hold other lines too). */
export function jsonLines(lines: readonly string[]): Record<string, unknown>[] {
  return lines.flatMap((line) => {
    try {
      return [JSON.parse(line) as Record<string, unknown>];
    } catch {
      return [];
    }
  });
}

export async function startServe(env: Record<string, string>, options: ServeOptions): Promise<ServeProcess> {
  const grpcPort = options.grpcPort ?? (await freePort());
  const httpPort = options.httpPort ?? (await freePort());
  const child: ChildProcess = spawn(process.execPath, [BIN, "serve"], {
    env: {
      PATH: process.env.PATH ?? "",
      AUTHZ_LOG_LEVEL: "info",
      AUTHZ_SHUTDOWN_GRACE_MS: "1000",
      ...env,
      AUTHZ_GRPC_LISTEN: `127.0.0.1:${grpcPort}`,
      AUTHZ_HTTP_LISTEN: `127.0.0.1:${httpPort}`,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(child);
  child.on("exit", () => children.delete(child));
  const logs: string[] = [];
  let partial = "";
  const collect = (chunk: Buffer) => {
    const lines = (partial + chunk.toString()).split("\n");
    partial = lines.pop() ?? "";
    logs.push(...lines.filter((line) => line !== ""));
  };
  child.stdout?.on("data", collect);
  child.stderr?.on("data", collect);
  const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
  let exitCode: number | null | undefined;
  void exited.then((code) => (exitCode = code));

  const messages = () =>
    logs.flatMap((line) => {
      try {
        return [String((JSON.parse(line) as { msg?: unknown }).msg ?? "")];
      } catch {
        return [line];
      }
    });
  const ready = options.ready ?? "flip-authz listening";
  const started = Date.now();
  while (!messages().includes(ready)) {
    if (exitCode !== undefined || Date.now() - started > 30_000) {
      child.kill("SIGKILL");
      throw new Error(`${options.name} did not start (exit ${exitCode}):\n${logs.join("\n")}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }

  const process_: ServeProcess = {
    name: options.name,
    grpcPort,
    httpPort,
    grpcTarget: `127.0.0.1:${grpcPort}`,
    httpBase: `${options.https ? "https" : "http"}://127.0.0.1:${httpPort}`,
    pid: child.pid ?? 0,
    logs,
    messages,
    signal(signal) {
      if (exitCode === undefined) child.kill(signal);
    },
    async stop(graceMs = 5000) {
      running.delete(process_);
      if (exitCode !== undefined) return exitCode;
      child.kill("SIGCONT");
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
  running.add(process_);
  return process_;
}

/** Stops every process still running (for afterAll, whatever a test left behind, started or not). */
export async function stopAll(): Promise<void> {
  await Promise.all([...running].map((p) => p.stop()));
  for (const child of children) {
    child.kill("SIGCONT");
    child.kill("SIGKILL");
  }
}

/**
 * The local ports of the TCP connections process `pid` holds (from /proc): with pg_stat_activity's
 * client_port, who holds which database connection.
 */
export function tcpPortsOf(pid: number): Set<number> {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const match = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (match?.[1]) inodes.add(match[1]);
    } catch {
      // Closed meanwhile.
    }
  }
  const ports = new Set<number>();
  for (const table of ["tcp", "tcp6"]) {
    let text: string;
    try {
      text = readFileSync(`/proc/${pid}/net/${table}`, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const fields = line.trim().split(/\s+/);
      const local = fields[1];
      const inode = fields[9];
      if (local === undefined || inode === undefined || !inodes.has(inode)) continue;
      ports.add(Number.parseInt(local.split(":")[1] ?? "0", 16));
    }
  }
  return ports;
}
