// `flip-authz healthcheck`: exit 0 when the local server reports SERVING (the image's HEALTHCHECK).

import type { Config } from "../config.ts";
import { probeHealth } from "../server/health-probe.ts";

export async function healthcheckCommand(config: Config): Promise<number> {
  const status = await probeHealth(config);
  process.stdout.write(`${status}\n`);
  return status === "SERVING" ? 0 : 1;
}
