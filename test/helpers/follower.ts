// A follower (AUTHZ_UPSTREAM) started in this process on port 0, its log captured: for the follower's own
// suites. Real processes (flip-authz serve as a child) are in test/helpers/serve-process.ts.

import { type FollowerApp, startFollower } from "../../src/app.ts";
import { type Env, loadConfig } from "../../src/config.ts";
import { createLogger } from "../../src/logger.ts";
import { type AuthzClient, createAuthzClient } from "./app.ts";

export interface TestFollower {
  app: FollowerApp;
  /** An open-mode-friendly gRPC client (no authorization header). */
  client: AuthzClient;
  grpcTarget: string;
  httpBase: string;
  /** Every line logged so far (pino JSON). */
  logs: string[];
  /** The `msg` of every log line so far. */
  messages(): string[];
  close(): Promise<void>;
}

export async function startTestFollower(upstreamTarget: string, env: Env = {}): Promise<TestFollower> {
  const config = loadConfig({
    AUTHZ_UPSTREAM: upstreamTarget,
    AUTHZ_GRPC_LISTEN: "127.0.0.1:0",
    AUTHZ_HTTP_LISTEN: "127.0.0.1:0",
    AUTHZ_SHUTDOWN_GRACE_MS: "1000",
    AUTHZ_LOG_LEVEL: "info",
    ...env,
  });
  const logs: string[] = [];
  const app = await startFollower(
    config,
    createLogger(config.logLevel, { write: (line: string) => void logs.push(line) }),
  );
  const grpcTarget = `127.0.0.1:${app.grpcPort}`;
  const client = createAuthzClient(grpcTarget);
  return {
    app,
    client,
    grpcTarget,
    httpBase: `http://127.0.0.1:${app.httpPort}`,
    logs,
    messages: () => logs.map((line) => String((JSON.parse(line) as { msg?: unknown }).msg ?? "")),
    async close() {
      client.close();
      await app.shutdown();
    },
  };
}

/** The overall status /readyz reports: what a Kubernetes probe of the pod sees. */
export async function readiness(httpBase: string): Promise<"SERVING" | "NOT_SERVING"> {
  const response = await fetch(`${httpBase}/readyz`);
  await response.arrayBuffer();
  return response.status === 200 ? "SERVING" : "NOT_SERVING";
}

/** Calls handled by a server, per method and code, from its /metrics. */
export async function handledCalls(httpBase: string, method: string, code = "OK"): Promise<number> {
  const text = await (await fetch(`${httpBase}/metrics`)).text();
  let total = 0;
  for (const [, labels, value] of text.matchAll(/^grpc_server_handled_total\{([^}]*)\} (\d+)/gm)) {
    if (labels?.includes(`grpc_method="${method}"`) && labels.includes(`grpc_code="${code}"`)) {
      total += Number(value);
    }
  }
  return total;
}
