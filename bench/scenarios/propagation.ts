// Propagation: two replicas on one PostgreSQL database; plain-SQL commits (as FLIP's Python API writes),
// each timed from COMMIT until both replicas' caches have applied its revision, beside one round trip
// (`SELECT 1` on the same connection) as the reference. Reported; the goal set earlier was p99 ≤ 50 ms.

import pg from "pg";
import { startApp } from "../../src/app.ts";
import { NIL_UUID } from "../../src/authz/ids.ts";
import { loadConfig } from "../../src/config.ts";
import { createLogger } from "../../src/logger.ts";
import { RESEARCHER_ROLE_ID } from "../fixtures.ts";
import { percentile, timedCommits } from "../harness.ts";
import type { BenchContext, Row, Scenario } from "../report.ts";

const ADMIN_USER = "11111111-2222-4333-8444-555555555555";

export const propagation: Scenario = {
  name: "propagation",
  title: "Propagation: plain-SQL commit → applied on both replicas' caches (PostgreSQL)",
  run,
};

async function run(context: BenchContext): Promise<Row[]> {
  if (!context.postgres) {
    return [{ name: "propagation", figure: Number.NaN, unit: "ms", note: "skipped: no PostgreSQL" }];
  }
  const database = await context.postgres.createDatabase("propagation");
  const config = loadConfig({
    DATABASE_URL: database.url,
    AUTHZ_GRPC_LISTEN: "127.0.0.1:0",
    AUTHZ_HTTP_LISTEN: "127.0.0.1:0",
  });
  const logger = createLogger("error");
  const replicas = [await startApp(config, logger), await startApp(config, logger)];
  const writer = new pg.Client({ connectionString: database.url });
  await writer.connect();
  const changes = Number(process.env.BENCH_CHANGES ?? 500);
  let timed: { latencies: number[]; baseline: number[] };
  try {
    await replicas[0]?.authz.assignRole(ADMIN_USER, "Admin", NIL_UUID);
    timed = await timedCommits(
      writer,
      changes,
      {
        userId: (i) => `00000000-0000-4000-8000-${i.toString(16).padStart(12, "0")}`,
        roleId: RESEARCHER_ROLE_ID,
      },
      (revision) =>
        Promise.all(replicas.map((replica) => replica.reader.waitFor(revision, 5000))).then((applied) =>
          applied.every(Boolean),
        ),
    );
  } finally {
    await writer.end();
    await Promise.all(replicas.map((replica) => replica.shutdown()));
    await database.drop();
  }
  const { latencies, baseline } = timed;
  const note = `${changes} commits; max ${(latencies.at(-1) ?? 0).toFixed(1)} ms`;
  return [50, 99].map((p) => ({
    name: `commit → every replica, p${p}`,
    figure: percentile(latencies, p),
    unit: "ms",
    reference: { name: "one round trip SELECT 1", figure: percentile(baseline, p) },
    ratio: percentile(latencies, p) / percentile(baseline, p),
    ...(p === 99 && { goal: "≤ 50 ms", pass: percentile(latencies, 99) <= 50 }),
    note,
  }));
}
