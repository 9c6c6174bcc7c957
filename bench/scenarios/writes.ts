// Writes (issue 11): AssignRole, SetUserRoles and UpdateProfile through the service (gRPC, 32 calls in flight,
// each call a new user, so every one writes its row, its audit row and its change-log entry), on PostgreSQL
// and SQLite, and `flip-authz import` users/s. The reference is pgbench in the same run, on the same
// PostgreSQL, with the same shape of transaction: two INSERTs and an UPDATE of a one-row counter, 32 clients
// (and, reported beside it, the same without the counter). Targets: AssignRole on PostgreSQL ≥ 0.75× pgbench
// with the counter; import ≥ 5,000 users/s on PostgreSQL.

import { mkdtempSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import {
  AssignRoleRequestSchema,
  SetUserRolesRequestSchema,
  UpdateProfileRequestSchema,
} from "../../gen/flip/authz/v1/authz_pb.ts";
import {
  grpcFrame,
  grpcLoad,
  LOAD_CPU,
  pinned,
  run,
  SERVER_CPU,
  startService,
  tmpDirectory,
} from "../harness.ts";
import type { BenchContext, Row, Scenario } from "../report.ts";

const IN_FLIGHT = 32;
const CALLS = Number(process.env.BENCH_WRITES ?? 2500);
const PGBENCH_SECONDS = Number(process.env.BENCH_SECONDS ?? 3) + 2;
const SERVICE = "/flip.authz.v1.AuthzService";
const ASSIGN_GOAL = 0.75;
const IMPORT_LINES = Number(process.env.BENCH_IMPORT_LINES ?? 100_000);
const IMPORT_GOAL = 5000;

export const writes: Scenario = {
  name: "writes",
  title: "Writes: AssignRole, SetUserRoles, UpdateProfile (32 in flight) and import, beside pgbench",
  run: runScenario,
};

/** A user id unique to this run, scenario step and index. */
function userId(step: number, i: number): string {
  return `00000000-0000-4${step.toString(16).padStart(3, "0")}-8000-${i.toString(16).padStart(12, "0")}`;
}

interface Step {
  name: string;
  path: string;
  frame(user: string): Buffer;
}

const STEPS: Step[] = [
  {
    name: "AssignRole",
    path: `${SERVICE}/AssignRole`,
    frame: (user) =>
      grpcFrame(
        toBinary(
          AssignRoleRequestSchema,
          create(AssignRoleRequestSchema, { userId: user, role: "Researcher" }),
        ),
      ),
  },
  {
    name: "SetUserRoles",
    path: `${SERVICE}/SetUserRoles`,
    frame: (user) =>
      grpcFrame(
        toBinary(
          SetUserRolesRequestSchema,
          create(SetUserRolesRequestSchema, { userId: user, roles: ["Researcher", "Viewer"] }),
        ),
      ),
  },
  {
    name: "UpdateProfile",
    path: `${SERVICE}/UpdateProfile`,
    frame: (user) =>
      grpcFrame(
        toBinary(
          UpdateProfileRequestSchema,
          create(UpdateProfileRequestSchema, { userId: user, name: "Bench User", organisation: "Bench Org" }),
        ),
      ),
  },
];

async function runScenario(context: BenchContext): Promise<Row[]> {
  const rows: Row[] = [];
  let pgbench: { counter: number; plain: number } | undefined;
  if (context.postgres) {
    pgbench = await pgbenchReference(context);
    context.log(
      `pgbench: ${pgbench.counter.toFixed(0)} tps with the counter, ${pgbench.plain.toFixed(0)} without`,
    );
    rows.push({
      name: "pgbench, 2 INSERTs + counter UPDATE, 32 clients",
      figure: pgbench.counter,
      unit: "tps",
      reference: { name: "the same without the counter", figure: pgbench.plain, unit: "tps" },
      ratio: pgbench.counter / pgbench.plain,
    });
  }
  const databases: { kind: string; env: Record<string, string>; drop(): Promise<void> }[] = [];
  if (context.postgres) {
    const database = await context.postgres.createDatabase("writes");
    databases.push({ kind: "PostgreSQL", env: { DATABASE_URL: database.url }, drop: database.drop });
  } else {
    rows.push({
      name: "writes on PostgreSQL",
      figure: Number.NaN,
      unit: "writes/s",
      note: "skipped: no PostgreSQL",
    });
  }
  const dir = mkdtempSync(join(tmpDirectory(), "writes-"));
  databases.push({
    kind: "SQLite",
    env: { DATABASE_URL: `sqlite:${join(dir, "authz.db")}` },
    drop: async () => {},
  });

  for (const database of databases) {
    const service = await startService({ env: database.env });
    try {
      for (const [index, step] of STEPS.entries()) {
        const bodies = Array.from({ length: CALLS }, (_, i) =>
          step.frame(userId(index + (database.kind === "SQLite" ? 8 : 0), i)).toString("base64"),
        );
        const outcome = await grpcLoad({
          port: service.port,
          path: step.path,
          bodies,
          concurrency: IN_FLIGHT,
          seconds: 0,
          once: true,
        });
        if (outcome.failures > 0)
          throw new Error(`${step.name} on ${database.kind}: ${outcome.firstFailure}`);
        const p = (q: number) =>
          outcome.latencies[
            Math.min(outcome.latencies.length - 1, Math.floor(q * outcome.latencies.length))
          ] ?? 0;
        const note = `${outcome.calls} calls; p50 ${p(0.5).toFixed(0)} ms, p99 ${p(0.99).toFixed(0)} ms`;
        const reference = database.kind === "PostgreSQL" ? pgbench : undefined;
        rows.push({
          name: `${step.name}, 32 in flight, new users (${database.kind})`,
          figure: outcome.rate,
          unit: "writes/s",
          ...(reference && {
            reference: { name: "pgbench, same shape", figure: reference.counter, unit: "tps" },
            ratio: outcome.rate / reference.counter,
          }),
          ...(reference &&
            step.name === "AssignRole" && {
              goal: `≥ ${ASSIGN_GOAL}× pgbench`,
              pass: outcome.rate >= ASSIGN_GOAL * reference.counter,
            }),
          note,
        });
      }
    } finally {
      await service.stop();
    }
    try {
      rows.push(await importRate(database.kind, database.env, dir));
    } finally {
      await database.drop();
    }
  }
  return rows;
}

/** `flip-authz import` of IMPORT_LINES new users (a role, a name and an organisation each), as its summary says. */
async function importRate(kind: string, env: Record<string, string>, dir: string): Promise<Row> {
  const file = join(dir, `import-${kind}.csv`);
  const lines = ["user_id,role,name,organisation"];
  for (let i = 0; i < IMPORT_LINES; i++) {
    lines.push(`${userId(kind === "SQLite" ? 15 : 7, i)},Researcher,User ${i},"Org, ${i % 100}"`);
  }
  writeFileSync(file, `${lines.join("\n")}\n`);
  const entry = join(import.meta.dirname, "..", "..", "bin", "flip-authz.js");
  const [command, args] = pinned(SERVER_CPU, process.execPath, [entry, "import", "--file", file]);
  const { stdout } = await run(command, args, {
    encoding: "utf8",
    env: { PATH: process.env.PATH ?? "", AUTHZ_LOG_LEVEL: "warn", ...env },
  });
  const match = /([\d.]+) s, (\d+) lines\/s/.exec(stdout);
  if (!match?.[2]) throw new Error(`import printed no rate: ${stdout}`);
  const rate = Number(match[2]);
  return {
    name: `import, ${IMPORT_LINES.toLocaleString("en-GB")} new users (${kind})`,
    figure: rate,
    unit: "users/s",
    ...(kind === "PostgreSQL" && {
      goal: `≥ ${IMPORT_GOAL.toLocaleString("en-GB")} users/s`,
      pass: rate >= IMPORT_GOAL,
    }),
    note: `${match[1]} s, both passes (validation and writes)`,
  };
}

/** pgbench's tps for two INSERTs and an UPDATE of a one-row counter (and without the UPDATE), 32 clients. */
async function pgbenchReference(context: BenchContext): Promise<{ counter: number; plain: number }> {
  if (!context.postgres) throw new Error("no PostgreSQL");
  const database = await context.postgres.createDatabase("pgbench");
  try {
    const dir = mkdtempSync(join(tmpDirectory(), "pgbench-"));
    const setup = join(dir, "setup.sql");
    writeFileSync(
      setup,
      `CREATE TABLE bench_pair (user_id uuid NOT NULL, role_id uuid NOT NULL, PRIMARY KEY (user_id, role_id));
       CREATE TABLE bench_audit (id uuid PRIMARY KEY, action varchar NOT NULL, user_id uuid NOT NULL,
         modified_by_user_id uuid NOT NULL, "timestamp" timestamptz NOT NULL);
       CREATE TABLE bench_counter (id integer PRIMARY KEY, revision bigint NOT NULL);
       INSERT INTO bench_counter VALUES (1, 0);`,
    );
    const insert = `BEGIN;
INSERT INTO bench_pair VALUES (gen_random_uuid(), gen_random_uuid());
INSERT INTO bench_audit VALUES (gen_random_uuid(), 'Assigned role Researcher', gen_random_uuid(), gen_random_uuid(), now());
`;
    const counter = join(dir, "counter.sql");
    writeFileSync(counter, `${insert}UPDATE bench_counter SET revision = revision + 1 WHERE id = 1;\nEND;\n`);
    const plain = join(dir, "plain.sql");
    writeFileSync(plain, `${insert}END;\n`);
    await run("psql", ["-q", "-v", "ON_ERROR_STOP=1", "-d", database.url, "-f", setup]);
    const tps = async (script: string) => {
      const [command, args] = pinned(LOAD_CPU, "pgbench", [
        "-n",
        "-c",
        String(IN_FLIGHT),
        "-j",
        "1",
        "-T",
        String(PGBENCH_SECONDS),
        "-f",
        script,
        database.url,
      ]);
      const { stdout } = await run(command, args, { encoding: "utf8" });
      const match = /tps = ([\d.]+)/.exec(stdout);
      if (!match?.[1]) throw new Error(`pgbench printed no tps: ${stdout}`);
      return Number(match[1]);
    };
    return { counter: await tps(counter), plain: await tps(plain) };
  } finally {
    await database.drop();
  }
}
