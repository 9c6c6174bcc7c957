// `flip-authz serve`: run until SIGTERM/SIGINT, then drain within AUTHZ_SHUTDOWN_GRACE_MS and exit 0. With
// AUTHZ_UPSTREAM set, as a follower of that upstream.

import { startApp, startFollower } from "../app.ts";
import type { Config } from "../config.ts";
import { createLogger } from "../logger.ts";

export async function serve(config: Config): Promise<number> {
  const logger = createLogger(config.logLevel, undefined, { format: config.logFormat });
  const app = config.upstream ? await startFollower(config, logger) : await startApp(config, logger);
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once("SIGTERM", () => resolve("SIGTERM"));
    process.once("SIGINT", () => resolve("SIGINT"));
  });
  logger.info({ signal }, "shutting down");
  // A second signal during the drain means "now".
  const now = () => {
    logger.warn("second signal: exiting without waiting");
    process.exit(1);
  };
  process.once("SIGTERM", now);
  process.once("SIGINT", now);
  await app.shutdown();
  logger.info("stopped");
  return 0;
}
