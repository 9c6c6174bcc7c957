// The follower's scenario (issue 9, bench/follower.ts) in the report's shape: followerBench writes its own
// Markdown tables on a fresh PostgreSQL database; their lines become rows, judged against the goals that
// module states (throughput ≥ 0.9× the upstream's, propagation p99 ≤ 50 ms), its memory rows reported.

import { followerBench } from "../follower.ts";
import type { BenchContext, Row, Scenario } from "../report.ts";

export const follower: Scenario = {
  name: "follower",
  title: "Follower: checks, propagation and memory (issue 9)",
  async run(context: BenchContext): Promise<Row[]> {
    if (!context.postgres) {
      return [{ name: "follower", figure: Number.NaN, unit: "", note: "skipped: no PostgreSQL" }];
    }
    // Sizes that fit the whole report in its six minutes, unless set (bench/follower.ts reads them).
    process.env.BENCH_REQUESTS ??= "10000";
    process.env.BENCH_CHANGES ??= "500";
    const database = await context.postgres.createDatabase("follower");
    const lines: string[] = [];
    try {
      // The upstream migrates the database itself (AUTHZ_MIGRATE_ON_START defaults to true).
      await followerBench(database.url, (line = "") => {
        lines.push(line);
      });
    } finally {
      await database.drop();
    }
    const cells = lines
      .filter((line) => line.startsWith("| ") && !line.startsWith("|---"))
      .map((line) =>
        line
          .split("|")
          .map((cell) => cell.trim())
          .slice(1, -1),
      );
    const find = (label: string) => cells.find((row) => row[0]?.startsWith(label));
    const rows: Row[] = [];
    const upstream = find("upstream");
    const follows = find("follower, cached");
    if (upstream && follows) {
      const ratio = Number(follows[2]);
      rows.push({
        name: "follower, cached CheckPermission",
        figure: Number(follows[1]),
        unit: "req/s",
        reference: { name: "the upstream's (database-backed)", figure: Number(upstream[1]) },
        ratio,
        goal: "≥ 0.90×",
        pass: ratio >= 0.9,
        note: "mean of 2 alternating runs",
      });
    }
    const commit = find("commit → follower");
    const roundTrip = find("baseline");
    if (commit && roundTrip) {
      const p99 = Number(commit[2]);
      rows.push({
        name: "commit → applied in a follower's cache, p99",
        figure: p99,
        unit: "ms",
        reference: { name: "one round trip SELECT 1, p99", figure: Number(roundTrip[2]) },
        goal: "≤ 50 ms",
        pass: p99 <= 50,
        note: `p50 ${commit[1]} ms, max ${commit[3]} ms`,
      });
    }
    for (const row of cells.filter((r) => r[0]?.includes("cached") && r.length === 4 && r[3] !== "")) {
      if (row[0]?.startsWith("follower")) continue;
      rows.push({
        name: `follower memory: ${row[0]}`,
        figure: Number(row[3]?.replace(/ bytes$/, "")),
        unit: row[3]?.endsWith("bytes") ? "bytes" : "MiB heap",
        note: row[2] ? `RSS ${row[2]} MiB, ${row[1]} users cached` : undefined,
      });
    }
    if (rows.length === 0) throw new Error(`the follower scenario printed no rows:\n${lines.join("\n")}`);
    return rows;
  },
};
