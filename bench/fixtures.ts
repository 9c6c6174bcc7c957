// Databases and request bodies the scenarios share: a migrated database (PostgreSQL when it answers, else a
// SQLite file) whose one "hot" user holds FLIP's Researcher role, and CheckPermission bodies for h2load.

import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { create, toBinary, toJsonString } from "@bufbuild/protobuf";
import Database from "better-sqlite3";
import pg from "pg";
import { CheckPermissionRequestSchema } from "../gen/flip/authz/v1/authz_pb.ts";
import { ROLES } from "../src/authz/flip.ts";
import { NIL_UUID } from "../src/authz/ids.ts";
import { loadConfig } from "../src/config.ts";
import { openStore } from "../src/store/index.ts";
import { grpcFrame, tmpDirectory } from "./harness.ts";
import type { BenchContext } from "./report.ts";

export const HOT_USER = "6f0c1f4e-2a53-4c7e-9d8b-0a1b2c3d4e5f";
export const HOT_PERMISSION = "CAN_CREATE_PROJECTS";
export const RESEARCHER_ROLE_ID = roleId("Researcher");
export const VIEWER_ROLE_ID = roleId("Viewer");

function roleId(name: string): string {
  const role = ROLES.find((r) => r.name === name);
  if (!role) throw new Error(`FLIP has no role ${name}`);
  return role.id;
}

export interface BenchDatabase {
  url: string;
  kind: "PostgreSQL" | "SQLite";
  drop(): Promise<void>;
}

/** A fresh migrated database with the hot user holding Researcher (which carries HOT_PERMISSION). */
export async function hotDatabase(context: BenchContext, label: string): Promise<BenchDatabase> {
  let database: BenchDatabase;
  if (context.postgres) {
    const created = await context.postgres.createDatabase(label);
    database = { url: created.url, kind: "PostgreSQL", drop: created.drop };
  } else {
    database = { url: `sqlite:${join(tmpDirectory(), `${label}.db`)}`, kind: "SQLite", drop: async () => {} };
  }
  const store = await openStore(loadConfig({ DATABASE_URL: database.url }).database, { migrate: true });
  try {
    await store.assignRole(HOT_USER, RESEARCHER_ROLE_ID, NIL_UUID);
  } finally {
    await store.close();
  }
  return database;
}

export interface CheckBody {
  /** The protobuf message, for checkOnce. */
  bytes: Uint8Array;
  /** A file holding the gRPC frame, for h2load -d. */
  grpcFile: string;
  /** A file holding the Connect JSON body. */
  jsonFile: string;
}

/** A CheckPermission request written out for h2load. */
export function checkBody(
  name: string,
  fields: { userId: string; permission: string; fullyConsistent?: boolean },
) {
  const request = create(CheckPermissionRequestSchema, fields);
  const bytes = toBinary(CheckPermissionRequestSchema, request);
  const grpcFile = join(tmpDirectory(), `${name}.grpc`);
  const jsonFile = join(tmpDirectory(), `${name}.json`);
  writeFileSync(grpcFile, grpcFrame(bytes));
  writeFileSync(jsonFile, toJsonString(CheckPermissionRequestSchema, request));
  return { bytes, grpcFile, jsonFile } satisfies CheckBody;
}

export const GRPC_HEADERS = ["content-type: application/grpc", "te: trailers"];

/** The i-th bench user's id, a UUID PostgreSQL and SQLite can make from i in SQL as cheaply. */
export function benchUserId(i: number): string {
  return `${i.toString(16).padStart(8, "0")}-0000-4000-8000-${i.toString(16).padStart(12, "0")}`;
}

/**
 * A migrated database holding `users` bench users (benchUserId(0…users-1)), one user_role row each (even
 * ones Researcher, odd ones Viewer), plus the hot user. PostgreSQL is seeded in one statement with the
 * change-log triggers off (session_replication_role = replica: this is test data, not a change anyone
 * follows); SQLite likewise, its triggers dropped and recreated around the seed in one transaction.
 */
export async function usersDatabase(
  context: BenchContext,
  kind: "PostgreSQL" | "SQLite",
  users: number,
  label: string,
): Promise<BenchDatabase> {
  let database: BenchDatabase;
  if (kind === "PostgreSQL") {
    if (!context.postgres) throw new Error("no PostgreSQL");
    const created = await context.postgres.createDatabase(label);
    database = { url: created.url, kind, drop: created.drop };
  } else {
    const path = join(tmpDirectory(), `${label}.db`);
    database = { url: `sqlite:${path}`, kind, drop: async () => rmSync(path, { force: true }) };
  }
  const store = await openStore(loadConfig({ DATABASE_URL: database.url }).database, { migrate: true });
  try {
    await store.assignRole(HOT_USER, RESEARCHER_ROLE_ID, NIL_UUID);
  } finally {
    await store.close();
  }
  if (kind === "PostgreSQL") {
    const client = new pg.Client({ connectionString: database.url });
    await client.connect();
    try {
      await client.query("SET session_replication_role = replica");
      await client.query(
        `INSERT INTO user_role (user_id, role_id)
         SELECT (lpad(to_hex(i), 8, '0') || '-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid,
           CASE WHEN i % 2 = 0 THEN $2::uuid ELSE $3::uuid END
         FROM generate_series(0, $1::int - 1) i`,
        [users, RESEARCHER_ROLE_ID, VIEWER_ROLE_ID],
      );
      await client.query("ANALYZE user_role");
    } finally {
      await client.end();
    }
  } else {
    const db = new Database(database.url.slice("sqlite:".length));
    try {
      // The change-log triggers are set aside for the seed (SQLite has no session_replication_role) and
      // put back exactly as they were, from sqlite_master.
      const triggers = db
        .prepare("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'user_role'")
        .all() as { name: string; sql: string }[];
      db.transaction(() => {
        for (const trigger of triggers) db.exec(`DROP TRIGGER "${trigger.name}"`);
        db.prepare(
          `WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < ? - 1)
           INSERT INTO user_role (user_id, role_id)
           SELECT printf('%08x-0000-4000-8000-%012x', i, i), CASE WHEN i % 2 = 0 THEN ? ELSE ? END FROM s`,
        ).run(users, RESEARCHER_ROLE_ID, VIEWER_ROLE_ID);
        for (const trigger of triggers) db.exec(trigger.sql);
      })();
      db.exec("ANALYZE");
    } finally {
      db.close();
    }
  }
  return database;
}
