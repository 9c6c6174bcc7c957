// Writes (issue 11): AssignRole, SetUserRoles and UpdateProfile through the service (gRPC, 32 calls in flight,
// each call a new user, so every one writes its row, its audit row and its change-log entry), on PostgreSQL
// and SQLite, and `flip-authz import` users/s. The reference is pgbench in the same run, on the same
// PostgreSQL, with the same shape of transaction: two INSERTs and an UPDATE of a one-row counter, 32 clients
// (and, reported beside it, the same without the counter). Targets: AssignRole on PostgreSQL ≥ 0.75× pgbench
// with the counter; import ≥ 5,000 users/s on PostgreSQL. Reported: pgbench running AssignRole's own
// statements, so the service's share and the database's are told apart. Each step is warmed up first.

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
const CALLS = Number(process.env.BENCH_WRITES ?? 1500);
const PGBENCH_SECONDS = Number(process.env.BENCH_SECONDS ?? 3) + 2;
const SERVICE = "/flip.authz.v1.AuthzService";
const ASSIGN_GOAL = 0.75;
const IMPORT_LINES = Number(process.env.BENCH_IMPORT_LINES ?? 50_000);
const IMPORT_GOAL = 5000;
/** Calls of each step before the measured ones, on other users: a fresh service compiles its write path. */
const WARMUP = 300;

/**
 * One AssignRole as the store sends it on PostgreSQL when it commits alone (src/store/postgres-writes.ts:
 * LOCK_USER_AND_ROLE, then CHANGE_ROLES, between MikroORM's BEGIN and COMMIT), with a random new user:
 * pgbench running it shows what PostgreSQL itself allows for the service's statements committed one write
 * per transaction, its change log included. Under load the store commits writes in groups
 * (src/store/group-commit.ts), which this row does not do. Keep in step with the store.
 */
const PGBENCH_USER = "('00000000-0000-4fff-8000-' || lpad(to_hex(:n::bigint), 12, '0'))";
const SERVICE_ASSIGN_ROLE = `\\set n random(1, 1000000000000)
BEGIN;
SELECT r.id, r.name, pg_advisory_xact_lock(17221, hashtext(${PGBENCH_USER})) AS locked,
  authz_defer_revisions() AS txid FROM roles AS r WHERE r.id = '10b64ed0-bc90-4c01-9cc3-933c704905c1';
WITH removed AS (
  DELETE FROM user_role WHERE user_id = ${PGBENCH_USER}::uuid AND role_id = any('{}') RETURNING role_id),
added AS (
  INSERT INTO user_role (user_id, role_id)
  SELECT ${PGBENCH_USER}::uuid, r.id FROM roles AS r WHERE r.id = any('{10b64ed0-bc90-4c01-9cc3-933c704905c1}')
  ON CONFLICT DO NOTHING RETURNING role_id),
audited AS (
  INSERT INTO users_audit (id, action, user_id, modified_by_user_id, "timestamp")
  SELECT gen_random_uuid(), 'Assigned role Researcher', ${PGBENCH_USER}::uuid,
    '00000000-0000-0000-0000-000000000000'::uuid, now()
  WHERE EXISTS (SELECT role_id FROM removed) OR EXISTS (SELECT role_id FROM added))
SELECT (EXISTS (SELECT role_id FROM removed) OR EXISTS (SELECT role_id FROM added)) AS changed, ur.id, ur.name
  FROM authz_revision AS c
  LEFT JOIN (SELECT r.id, r.name FROM roles AS r
    WHERE (r.id IN (SELECT role_id FROM user_role WHERE user_id = ${PGBENCH_USER}::uuid)
           AND NOT r.id IN (SELECT role_id FROM removed))
       OR r.id IN (SELECT role_id FROM added)) AS ur ON true
  WHERE c.id = 1;
COMMIT;
`;

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
  let postgresUrl: string | undefined;
  if (context.postgres) {
    const database = await context.postgres.createDatabase("writes");
    postgresUrl = database.url;
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

  let assignRate: number | undefined;
  for (const database of databases) {
    const service = await startService({ env: database.env });
    const offset = database.kind === "SQLite" ? 8 : 0;
    try {
      for (const [index, step] of STEPS.entries()) {
        const warmup = await grpcLoad({
          port: service.port,
          path: step.path,
          bodies: Array.from({ length: WARMUP }, (_, i) =>
            step.frame(userId(index + 4 + offset, i)).toString("base64"),
          ),
          concurrency: IN_FLIGHT,
          seconds: 0,
          once: true,
        });
        if (warmup.failures > 0) throw new Error(`${step.name} on ${database.kind}: ${warmup.firstFailure}`);
      }
      for (const [index, step] of STEPS.entries()) {
        const bodies = Array.from({ length: CALLS }, (_, i) =>
          step.frame(userId(index + offset, i)).toString("base64"),
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
        if (reference && step.name === "AssignRole") assignRate = outcome.rate;
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
    if (database.kind === "PostgreSQL" && postgresUrl && pgbench && assignRate !== undefined) {
      const script = join(dir, "service-assign-role.sql");
      writeFileSync(script, SERVICE_ASSIGN_ROLE);
      const own = await pgbenchTps(script, postgresUrl);
      rows.push({
        name: "pgbench running AssignRole's own statements (PostgreSQL, change log included), 32 clients",
        figure: own,
        unit: "tps",
        reference: { name: "pgbench, same shape", figure: pgbench.counter, unit: "tps" },
        ratio: own / pgbench.counter,
        note: "what PostgreSQL allows for the statements the service sends, with no service in between",
      });
      rows.push({
        name: "AssignRole through the service, beside its own statements in pgbench (PostgreSQL)",
        figure: assignRate,
        unit: "writes/s",
        reference: { name: "pgbench, the same statements", figure: own, unit: "tps" },
        ratio: assignRate / own,
      });
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

/** pgbench's tps for a script file, 32 clients, pinned to the load core. */
async function pgbenchTps(script: string, url: string): Promise<number> {
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
    url,
  ]);
  const { stdout } = await run(command, args, { encoding: "utf8" });
  const match = /tps = ([\d.]+)/.exec(stdout);
  if (!match?.[1]) throw new Error(`pgbench printed no tps: ${stdout}`);
  return Number(match[1]);
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
    return { counter: await pgbenchTps(counter, database.url), plain: await pgbenchTps(plain, database.url) };
  } finally {
    await database.drop();
  }
}
