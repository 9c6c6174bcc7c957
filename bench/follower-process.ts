// A follower process for the benchmarks (run with --expose-gc): startFollower on AUTHZ_UPSTREAM from the
// environment, port 0. Prints {"port": N} once synced; over IPC, "memory" answers its memory use after a
// full garbage collection and how many users its caches hold. Stops on SIGTERM.

import { startFollower } from "../src/app.ts";
import { loadConfig } from "../src/config.ts";
import { createLogger } from "../src/logger.ts";

const config = loadConfig({
  ...process.env,
  AUTHZ_GRPC_LISTEN: "127.0.0.1:0",
  AUTHZ_HTTP_LISTEN: "127.0.0.1:0",
});
const app = await startFollower(config, createLogger("error"));
while (!app.reader.live) await new Promise((resolve) => setTimeout(resolve, 20));

process.on("message", (message) => {
  if (message !== "memory") return;
  (globalThis as { gc?: () => void }).gc?.();
  const { rss, heapUsed } = process.memoryUsage();
  process.send?.({ rss, heapUsed, cachedUsers: app.reader.cachedUsers });
});
process.stdout.write(`${JSON.stringify({ port: app.grpcPort })}\n`);
process.once("SIGTERM", () => {
  void app.shutdown().then(() => process.exit(0));
});
