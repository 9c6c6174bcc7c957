// The shape every benchmark scenario returns, and the report built from it: printed as the run goes and
// written to bench/RESULTS.md with the machine, the versions and the date.
//
// A scenario is a module exporting a `Scenario`: `run(context)` starts what it needs (servers in their own
// processes, databases), measures, stops everything again, and returns rows. A row judged against a target
// has `goal` and `pass`; a row without them is reported only. Register a new scenario in bench/run.ts.

export interface Row {
  /** What was measured, e.g. "cached CheckPermission, gRPC". */
  name: string;
  figure: number;
  /** "req/s", "ms", "MB", "checks/s", … */
  unit: string;
  /** What the figure is read against, measured in the same run (same Node binary, same machine). */
  reference?: { name: string; figure: number; unit?: string };
  /** figure / reference.figure, or whatever ratio the goal is stated in. */
  ratio?: number;
  /** The target in words ("≥ 0.9× the reference"); absent when the row is reported, not judged. */
  goal?: string;
  /** Whether the goal was met; absent when the row is reported only. */
  pass?: boolean;
  /** A short remark printed beside the row (p99 of the reference, how many runs, …). */
  note?: string;
}

export interface BenchContext {
  /** PostgreSQL, when it answers at TEST_POSTGRES_URL; scenarios that need it skip (a row saying so) without. */
  postgres: PostgresAccess | undefined;
  /** A progress line on stderr (not in the report). */
  log(line: string): void;
}

export interface PostgresAccess {
  /** The admin URL (TEST_POSTGRES_URL or the default). */
  adminUrl: string;
  /** A fresh, empty database; dropped at the end of the run (or call `drop` sooner). */
  createDatabase(label: string): Promise<{ url: string; name: string; drop(): Promise<void> }>;
}

export interface Scenario {
  /** Run it alone with `npm run bench -- <name>`. */
  name: string;
  /** The report's section heading. */
  title: string;
  run(context: BenchContext): Promise<Row[]>;
}

export interface SectionResult {
  scenario: Scenario;
  rows: Row[];
  seconds: number;
  error?: string;
}

const number = (value: number, unit?: string): string => {
  if (!Number.isFinite(value)) return "–";
  if (unit === "ms") return value < 10 ? value.toFixed(2) : value.toFixed(1);
  if (Math.abs(value) >= 100) return Math.round(value).toLocaleString("en-GB");
  return value.toFixed(value >= 10 ? 1 : 2);
};

export function verdict(row: Row): string {
  if (row.pass === undefined) return "reported";
  return row.pass ? "PASS" : "FAIL";
}

function cells(row: Row): string[] {
  const reference = row.reference
    ? `${row.reference.name}: ${number(row.reference.figure, row.reference.unit ?? row.unit)} ${row.reference.unit ?? row.unit}`
    : "";
  return [
    row.name,
    `${number(row.figure, row.unit)} ${row.unit}`,
    reference,
    row.ratio === undefined ? "" : `${row.ratio.toFixed(2)}×`,
    row.goal ?? "",
    verdict(row),
    row.note ?? "",
  ];
}

const HEADER = ["measured", "figure", "reference", "ratio", "goal", "result", "note"];

/** One row as a console line. */
export function formatLine(row: Row): string {
  const [name, figure, reference, ratio, goal, result, note] = cells(row);
  const parts = [`${result?.padEnd(8)} ${name}: ${figure}`];
  if (reference) parts.push(`vs ${reference}`);
  if (ratio) parts.push(`= ${ratio}`);
  if (goal) parts.push(`(goal ${goal})`);
  if (note) parts.push(`[${note}]`);
  return parts.join(" ");
}

const escapeCell = (cell: string) => cell.replaceAll("|", "\\|");

/** The rows as one Markdown table. */
export function markdownTable(rows: readonly Row[]): string {
  const lines = [`| ${HEADER.join(" | ")} |`, `|${HEADER.map(() => "---").join("|")}|`];
  for (const row of rows) lines.push(`| ${cells(row).map(escapeCell).join(" | ")} |`);
  return lines.join("\n");
}

export interface Environment {
  date: string;
  commit: string;
  machine: string[];
  versions: string[];
  loadBefore: string;
  loadAfter: string;
  totalSeconds: number;
}

/** bench/RESULTS.md: where and when, then every section's rows. */
export function markdownReport(environment: Environment, sections: readonly SectionResult[]): string {
  const all = sections.flatMap((section) => section.rows);
  const judged = all.filter((row) => row.pass !== undefined);
  const passed = judged.filter((row) => row.pass).length;
  const out = [
    "# flip-authz benchmark results",
    "",
    "Written by `npm run bench` (bench/run.ts); each figure is read against a reference measured in the same",
    "run on the same Node binary. See bench/README.md for what each scenario does.",
    "",
    `- date: ${environment.date}`,
    `- commit: ${environment.commit}`,
    ...environment.machine.map((line) => `- ${line}`),
    ...environment.versions.map((line) => `- ${line}`),
    `- load average (1/5/15 min) before: ${environment.loadBefore}; after: ${environment.loadAfter}`,
    `- duration: ${environment.totalSeconds.toFixed(0)} s`,
    `- targets: ${passed} of ${judged.length} PASS`,
    "",
  ];
  for (const section of sections) {
    out.push(`## ${section.scenario.title}`, "");
    if (section.error) out.push(`Failed: ${section.error}`, "");
    if (section.rows.length > 0) out.push(markdownTable(section.rows), "");
    out.push(`(${section.seconds.toFixed(0)} s)`, "");
  }
  return `${out.join("\n")}`;
}
