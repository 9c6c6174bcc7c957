// A follower's upstream, the counterpart of src/store/: the source its caches are filled from (reads and
// the change stream) and the forwarder for the calls it does not answer itself.

import type { UpstreamConfig } from "../config.ts";
import type { UpstreamTracer } from "../tracing/call-span.ts";
import { createUpstreamClient } from "./client.ts";
import { createForwarder, type Forwarded } from "./forward.ts";
import { ProblemLog, type UpstreamLogger } from "./problems.ts";
import { UpstreamSource } from "./source.ts";

export type { UpstreamSource } from "./source.ts";

export interface Upstream {
  source: UpstreamSource;
  forwarded: Forwarded;
  /** Closes the channel; call after the change hub's subscription is closed. */
  close(): void;
}

/**
 * Builds the channel (it connects lazily): only unreadable TLS files throw (a ConfigError). With `tracer`,
 * what a traced call asks of the upstream is in client spans continued there.
 */
export function openUpstream(
  config: UpstreamConfig,
  logger: UpstreamLogger,
  tracer?: UpstreamTracer,
): Upstream {
  const client = createUpstreamClient(config, tracer);
  const source = new UpstreamSource(client, {
    logger,
    problems: new ProblemLog(logger),
    maxStalenessMs: config.maxStalenessMs,
  });
  return { source, forwarded: createForwarder(client), close: () => client.close() };
}
