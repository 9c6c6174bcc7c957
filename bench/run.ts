// The benchmark report (npm run bench): runs every scenario in bench/scenarios/, prints each row with its
// figure, reference and PASS/FAIL as it goes, and writes bench/RESULTS.md (machine, versions, date, every
// row). Each figure is read against a reference measured in the same run on the same Node binary, because
// these machines are shared and noisy. Needs h2load (Debian: nghttp2-client) and, for the scenarios that
// use it, PostgreSQL at TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres) and pgbench.
//
//   npm run bench                     everything (writes bench/RESULTS.md)
//   npm run bench -- hot latency      only these scenarios (writes bench/results/latest.md)
//   npm run bench -- --list           the scenarios' names
//   npm run bench -- soak             a scenario that runs only when named (10 minutes; bench/README.md)

import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg, totalmem } from "node:os";
import { join } from "node:path";
import { connectPostgres, removeTmpDirectory } from "./harness.ts";
import {
  type BenchContext,
  type Environment,
  formatLine,
  markdownReport,
  type Scenario,
  type SectionResult,
} from "./report.ts";
import { connectJson } from "./scenarios/connect-json.ts";
import { follower } from "./scenarios/follower.ts";
import { guard } from "./scenarios/guard.ts";
import { hotPath } from "./scenarios/hot-path.ts";
import { millionUsers } from "./scenarios/million-users.ts";
import { propagation } from "./scenarios/propagation.ts";
import { soak } from "./scenarios/soak.ts";
import { writes } from "./scenarios/writes.ts";

/** In the order they run. Add a scenario here (bench/report.ts has the shape). */
const SCENARIOS: Scenario[] = [hotPath, connectJson, millionUsers, propagation, guard, follower, writes];
/** Run only when named (too long for the default run). */
const ON_DEMAND: Scenario[] = [soak];

const ADMIN_URL = process.env.TEST_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const args = process.argv.slice(2);
if (args.includes("--list")) {
  for (const scenario of SCENARIOS) process.stdout.write(`${scenario.name.padEnd(16)} ${scenario.title}\n`);
  for (const scenario of ON_DEMAND) {
    process.stdout.write(`${scenario.name.padEnd(16)} ${scenario.title} (only when named)\n`);
  }
  process.exit(0);
}
const unknown = args.filter(
  (name) => ![...SCENARIOS, ...ON_DEMAND].some((scenario) => scenario.name === name),
);
if (unknown.length > 0) {
  process.stderr.write(`unknown scenario ${unknown.join(", ")}; npm run bench -- --list\n`);
  process.exit(2);
}
const selected =
  args.length === 0 ? SCENARIOS : [...SCENARIOS, ...ON_DEMAND].filter((s) => args.includes(s.name));

const load = () =>
  loadavg()
    .map((value) => value.toFixed(2))
    .join(" / ");
const started = performance.now();
const loadBefore = load();
const postgres = await connectPostgres(ADMIN_URL);
const context: BenchContext = {
  postgres,
  log: (line) => process.stderr.write(`  … ${line}\n`),
};

const sections: SectionResult[] = [];
try {
  for (const scenario of selected) {
    process.stdout.write(`\n## ${scenario.title}\n`);
    const t0 = performance.now();
    const section: SectionResult = { scenario, rows: [], seconds: 0 };
    try {
      section.rows = await scenario.run(context);
    } catch (error) {
      section.error = error instanceof Error ? (error.stack ?? error.message) : String(error);
      process.stdout.write(`ERROR    ${section.error}\n`);
    }
    section.seconds = (performance.now() - t0) / 1000;
    for (const row of section.rows) process.stdout.write(`${formatLine(row)}\n`);
    process.stdout.write(`(${section.seconds.toFixed(0)} s)\n`);
    sections.push(section);
  }
} finally {
  await postgres?.dropAll();
  removeTmpDirectory();
}

const totalSeconds = (performance.now() - started) / 1000;
const environment: Environment = {
  date: new Date().toISOString(),
  commit: tryRun("git", ["rev-parse", "--short", "HEAD"]) ?? "unknown",
  machine: [
    `CPU: ${cpus()[0]?.model ?? "unknown"}, ${cpus().length} cores (servers pinned to the last, load generators to the first)`,
    `memory: ${(totalmem() / 1024 ** 3).toFixed(0)} GiB; kernel ${tryRun("uname", ["-r"]) ?? "unknown"}`,
  ],
  versions: [
    `Node ${process.version} (every server and reference runs on this binary)`,
    `@grpc/grpc-js ${version("@grpc/grpc-js")}, @connectrpc/connect-node ${version("@connectrpc/connect-node")}, @bufbuild/protobuf ${version("@bufbuild/protobuf")}, prom-client ${version("prom-client")}`,
    `PostgreSQL: ${postgres ? (tryRun("psql", [ADMIN_URL, "-Atc", "SHOW server_version"]) ?? "unknown") : "absent"}; ${tryRun("h2load", ["--version"])?.split("\n")[0] ?? "h2load absent"}; ${tryRun("pgbench", ["--version"]) ?? "pgbench absent"}`,
  ],
  loadBefore,
  loadAfter: load(),
  totalSeconds,
};
const rows = sections.flatMap((section) => section.rows);
const failed = rows.filter((row) => row.pass === false).length;
const errors = sections.filter((section) => section.error).length;
process.stdout.write(
  `\n${rows.filter((row) => row.pass).length} PASS, ${failed} FAIL, ${errors} scenario errors in ${totalSeconds.toFixed(0)} s (load average before ${loadBefore}, after ${environment.loadAfter})\n`,
);
const full = selected.length === SCENARIOS.length;
const target = full
  ? join(import.meta.dirname, "RESULTS.md")
  : join(import.meta.dirname, "results", "latest.md");
mkdirSync(join(import.meta.dirname, "results"), { recursive: true });
writeFileSync(target, markdownReport(environment, sections));
process.stdout.write(`written to ${full ? "bench/RESULTS.md" : "bench/results/latest.md"}\n`);
process.exit(failed > 0 || errors > 0 ? 1 : 0);

function tryRun(command: string, commandArgs: string[]): string | undefined {
  try {
    return execFileSync(command, commandArgs, {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    }).trim();
  } catch {
    return undefined;
  }
}

function version(name: string): string {
  try {
    const file = join(import.meta.dirname, "..", "node_modules", name, "package.json");
    return (JSON.parse(readFileSync(file, "utf8")) as { version: string }).version;
  } catch {
    return "?";
  }
}
