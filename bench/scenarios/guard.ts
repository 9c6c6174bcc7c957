// The route guard's scenario (issue 8, bench/guard.ts) in the report's shape: guardBench writes its own
// Markdown table; each of its lines becomes a row (req/s judged against its target, requests per
// CPU-second reported beside it).

import { guardBench } from "../guard.ts";
import type { Row, Scenario } from "../report.ts";

export const guard: Scenario = {
  name: "guard",
  title: "Route guard: Envoy ext_authz Check and /forward-auth (issue 8)",
  async run() {
    // A length that fits the whole report in its six minutes, unless set (bench/guard.ts reads it).
    process.env.BENCH_GUARD_SECONDS ??= "1.5";
    const lines: string[] = [];
    await guardBench((line = "") => {
      lines.push(line);
    });
    const rows: Row[] = [];
    for (const line of lines) {
      // | <name> vs <reference> | <measure> | figure | reference | ratio | ≥ target | PASS/FAIL | rounds |
      const cells = line.split("|").map((cell) => cell.trim());
      const [, subject, measure, figure, reference, ratio, target, verdict, rounds] = cells;
      if (cells.length !== 10 || !subject?.includes(" vs ") || Number.isNaN(Number(figure))) continue;
      const at = subject.indexOf(" vs ");
      const judged = measure === "req/s";
      rows.push({
        name: `${subject.slice(0, at)} (${measure})`,
        figure: Number(figure),
        unit: "req/s",
        reference: { name: subject.slice(at + 4), figure: Number(reference) },
        ratio: Number(ratio),
        ...(judged && { goal: `${target}×`, pass: verdict === "PASS" }),
        note: `each round's ratio: ${rounds}`,
      });
    }
    if (rows.length === 0) throw new Error(`the guard scenario printed no rows:\n${lines.join("\n")}`);
    return rows;
  },
};
