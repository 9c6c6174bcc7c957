// Replicas as operators run them: `flip-authz serve` as real child processes (Node 24, the test's own
// process.execPath) on free ports, each with a real @grpc/grpc-js client, plus the observations the
// coherence tests need: readiness, /metrics gauges, and what the process logged.

import { type ChildProcess, spawn } from "node:child_process";
import { AuthzService } from "../../gen/flip/authz/v1/authz_pb.ts";
import { type AuthzClient, createAuthzClient } from "../helpers/app.ts";
import { BIN } from "../helpers/cli.ts";
import { freePort } from "../helpers/ports.ts";

export const m = AuthzService.method;

/** FLIP's predefined rows (src/authz/flip.ts): Researcher carries CAN_CREATE_PROJECTS, Viewer nothing. */
export const RESEARCHER_ID = "10b64ed0-bc90-4c01-9cc3-933c704905c1";
export const VIEWER_ID = "cdee79c9-a5e1-4b9e-a315-1ec2f3d29efe";
export const CAN_APPROVE_PROJECTS_ID = "e2703e64-0186-4bc1-ac40-ba4ef63255ec";

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export interface Replica {
  name: string;
  client: AuthzClient;
  httpBase: string;
  /** Everything the process wrote to stdout and stderr so far (JSON log lines at AUTHZ_LOG_LEVEL=warn). */
  output(): string;
  /** GET /readyz: true on 200 (SERVING). */
  ready(): Promise<boolean>;
  /** One gauge from GET /metrics. */
  metric(name: string): Promise<number>;
  /** Sends a signal to the process (SIGSTOP/SIGCONT to freeze it while the world moves on). */
  signal(signal: NodeJS.Signals): void;
  /** SIGTERM, then the exit code. */
  stop(): Promise<number | null>;
}

async function waitReady(child: ChildProcess, httpBase: string, output: () => string): Promise<void> {
  const deadline = Date.now() + 45_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`flip-authz serve exited (${child.exitCode ?? child.signalCode}):\n${output()}`);
    }
    const ready = await fetch(`${httpBase}/readyz`).then(
      (response) => response.status === 200,
      () => false,
    );
    if (ready) return;
    if (Date.now() > deadline) throw new Error(`flip-authz serve not ready in 45 s:\n${output()}`);
    await sleep(100);
  }
}

/** Starts `flip-authz serve` on `databaseUrl` (open mode, loopback) and resolves once /readyz says ready. */
export async function startReplica(
  name: string,
  databaseUrl: string,
  env: Record<string, string> = {},
): Promise<Replica> {
  const [grpcPort, httpPort] = [await freePort(), await freePort()];
  const child = spawn(process.execPath, [BIN, "serve"], {
    env: {
      PATH: process.env.PATH ?? "",
      DATABASE_URL: databaseUrl,
      AUTHZ_GRPC_LISTEN: `127.0.0.1:${grpcPort}`,
      AUTHZ_HTTP_LISTEN: `127.0.0.1:${httpPort}`,
      AUTHZ_LOG_LEVEL: "warn",
      AUTHZ_SHUTDOWN_GRACE_MS: "1000",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout?.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
  const httpBase = `http://127.0.0.1:${httpPort}`;
  try {
    await waitReady(child, httpBase, () => output);
  } catch (error) {
    child.kill("SIGKILL");
    await exited;
    throw error;
  }
  const client = createAuthzClient(`127.0.0.1:${grpcPort}`);
  return {
    name,
    client,
    httpBase,
    output: () => output,
    ready: () =>
      fetch(`${httpBase}/readyz`).then(
        (response) => response.status === 200,
        () => false,
      ),
    async metric(metricName) {
      const body = await (await fetch(`${httpBase}/metrics`)).text();
      const line = body.split("\n").find((l) => l.startsWith(`${metricName} `));
      if (line === undefined) throw new Error(`no metric ${metricName}`);
      return Number(line.slice(metricName.length + 1));
    },
    signal(signal) {
      child.kill(signal);
    },
    async stop() {
      client.close();
      child.kill("SIGCONT");
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/** CheckPermission's answer as a comparable value: allowed, or the gRPC status code it failed with. */
/** Anything with a name and a client: a replica process, or an app started in this process. */
export type Checker = Pick<Replica, "name" | "client">;

export async function checkOutcome(
  replica: Checker,
  userId: string,
  permission: string,
): Promise<"allowed" | "denied" | number> {
  try {
    const response = await replica.client.call(m.checkPermission, { userId, permission });
    return response.allowed ? "allowed" : "denied";
  } catch (error) {
    return (error as { code: number }).code;
  }
}

/**
 * Polls CheckPermission on `replica` every 5 ms from now until it gives `expected`, then keeps asking for
 * `holdMs` more; resolves to the time until the first right answer arrived (ms since `since`, so the
 * latency of that call included). Rejects when it is not right within `timeoutMs`, or when a right answer
 * is followed by a wrong one. COHERENCE_VERBOSE=1 prints each measurement and the stale answers before it.
 */
export async function reflected(
  replica: Checker,
  userId: string,
  permission: string,
  expected: "allowed" | "denied" | number,
  since: number,
  { timeoutMs = 2000, holdMs = 300 } = {},
): Promise<number> {
  let firstRight: number | undefined;
  /** Stale answers before the first right one, each as when it was asked (ms since `since`). */
  const stale: number[] = [];
  for (;;) {
    const asked = performance.now() - since;
    const outcome = await checkOutcome(replica, userId, permission);
    const now = performance.now();
    if (outcome === expected) {
      if (firstRight === undefined) {
        firstRight = now - since;
        if (process.env.COHERENCE_VERBOSE) {
          const asks = stale.map((ms) => ms.toFixed(1)).join(", ");
          console.info(
            `${replica.name}: ${String(expected)} after ${firstRight.toFixed(1)} ms; stale answers to calls made at [${asks}] ms`,
          );
        }
      }
      if (now - since - firstRight >= holdMs) return firstRight;
    } else if (firstRight !== undefined) {
      throw new Error(
        `${replica.name}: ${permission} for ${userId} was ${String(expected)} after ${firstRight.toFixed(1)} ms, then ${String(outcome)} again`,
      );
    } else if (now - since > timeoutMs) {
      throw new Error(
        `${replica.name}: ${permission} for ${userId} still ${String(outcome)} (want ${String(expected)}) after ${timeoutMs} ms`,
      );
    } else {
      stale.push(asked);
    }
    await sleep(5);
  }
}
