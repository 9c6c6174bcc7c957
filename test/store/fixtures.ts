// Helpers for the store's database-level tests: FLIP's own DDL (verbatim from shared/spec/SCHEMA.md) and an
// equivalent for SQLite, and whole-table snapshots on PostgreSQL (pg) and SQLite (node:sqlite).

import { execFileSync } from "node:child_process";
import { DatabaseSync } from "node:sqlite";
import pg from "pg";

export const FLIP_TABLES = [
  "permission",
  "roles",
  "role_permission",
  "user_role",
  "user_profile",
  "users_audit",
];
export const ALL_TABLES = [...FLIP_TABLES, "authz_change_log", "authz_revision", "authz_migrations"];

/** FLIP's DDL exactly as SCHEMA.md gives it. */
export const FLIP_POSTGRES_DDL = `
CREATE TABLE permission (id UUID NOT NULL, permission_name VARCHAR NOT NULL, permission_description VARCHAR NOT NULL,
  CONSTRAINT permission_pkey PRIMARY KEY (id));
CREATE TABLE roles (id UUID NOT NULL, name VARCHAR NOT NULL, description VARCHAR NOT NULL,
  created_at TIMESTAMP WITH TIME ZONE NOT NULL, updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
  CONSTRAINT roles_pkey PRIMARY KEY (id), CONSTRAINT roles_name_key UNIQUE (name));
CREATE TABLE user_profile (user_id UUID NOT NULL, name VARCHAR(255) NOT NULL, organisation VARCHAR(255) NOT NULL,
  created_at TIMESTAMP WITH TIME ZONE NOT NULL, updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
  CONSTRAINT user_profile_pkey PRIMARY KEY (user_id));
CREATE TABLE users_audit (id UUID NOT NULL, action VARCHAR NOT NULL, user_id UUID NOT NULL,
  modified_by_user_id UUID NOT NULL, "timestamp" TIMESTAMP WITH TIME ZONE NOT NULL,
  CONSTRAINT users_audit_pkey PRIMARY KEY (id));
CREATE TABLE role_permission (id UUID NOT NULL, role_id UUID NOT NULL, permission_id UUID NOT NULL,
  CONSTRAINT role_permission_pkey PRIMARY KEY (id),
  CONSTRAINT role_permission_permission_id_fkey FOREIGN KEY (permission_id) REFERENCES permission (id) ON DELETE CASCADE,
  CONSTRAINT role_permission_role_id_fkey FOREIGN KEY (role_id) REFERENCES roles (id) ON DELETE CASCADE);
CREATE TABLE user_role (user_id UUID NOT NULL, role_id UUID NOT NULL,
  CONSTRAINT user_role_pkey PRIMARY KEY (user_id, role_id),
  CONSTRAINT user_role_role_id_fkey FOREIGN KEY (role_id) REFERENCES roles (id));
`;

/** The same tables as a SQLite FLIP-like database would declare them (timestamps as epoch milliseconds). */
export const FLIP_SQLITE_DDL = `
CREATE TABLE permission (id VARCHAR NOT NULL PRIMARY KEY, permission_name VARCHAR NOT NULL,
  permission_description VARCHAR NOT NULL);
CREATE TABLE roles (id VARCHAR NOT NULL PRIMARY KEY, name VARCHAR NOT NULL UNIQUE, description VARCHAR NOT NULL,
  created_at DATETIME NOT NULL, updated_at DATETIME NOT NULL);
CREATE TABLE user_profile (user_id VARCHAR NOT NULL PRIMARY KEY, name VARCHAR(255) NOT NULL,
  organisation VARCHAR(255) NOT NULL, created_at DATETIME NOT NULL, updated_at DATETIME NOT NULL);
CREATE TABLE users_audit (id VARCHAR NOT NULL PRIMARY KEY, action VARCHAR NOT NULL, user_id VARCHAR NOT NULL,
  modified_by_user_id VARCHAR NOT NULL, "timestamp" DATETIME NOT NULL);
CREATE TABLE role_permission (id VARCHAR NOT NULL PRIMARY KEY,
  role_id VARCHAR NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
  permission_id VARCHAR NOT NULL REFERENCES permission (id) ON DELETE CASCADE);
CREATE TABLE user_role (user_id VARCHAR NOT NULL, role_id VARCHAR NOT NULL REFERENCES roles (id),
  PRIMARY KEY (user_id, role_id));
`;

export async function withPg<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  client.on("error", () => {});
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** Every row of each table as sorted JSON text (timestamps in PostgreSQL's full-precision text form). */
export async function pgSnapshot(client: pg.Client, tables: string[]): Promise<Record<string, string[]>> {
  const out: Record<string, string[]> = {};
  for (const table of tables) {
    const exists = await client.query("SELECT to_regclass($1) AS t", [table]);
    if (exists.rows[0]?.t === null) continue;
    const rows = await client.query(`SELECT row_to_json(t)::text AS j FROM ${table} t`);
    out[table] = rows.rows.map((row: { j: string }) => row.j).sort();
  }
  return out;
}

/** Column name, type, length, nullability and default of FLIP's tables, from information_schema. */
export async function pgColumns(client: pg.Client): Promise<string[]> {
  const rows = await client.query(
    `SELECT table_name, column_name, data_type, character_maximum_length, is_nullable, column_default
     FROM information_schema.columns WHERE table_schema = 'public' AND table_name = ANY($1)
     ORDER BY table_name, column_name`,
    [FLIP_TABLES],
  );
  return rows.rows.map((row) => JSON.stringify(row));
}

/** FLIP tables' constraints with their definitions. */
export async function pgConstraints(client: pg.Client): Promise<string[]> {
  const rows = await client.query(
    `SELECT conrelid::regclass::text AS t, conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
     WHERE conrelid::regclass::text = ANY($1) ORDER BY 1, 2`,
    [FLIP_TABLES],
  );
  return rows.rows.map((row) => `${row.t}.${row.conname}: ${row.def}`);
}

export function sqliteSnapshot(path: string, tables: string[]): Record<string, string[]> {
  const db = new DatabaseSync(path);
  try {
    const out: Record<string, string[]> = {};
    for (const table of tables) {
      const exists = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?")
        .get(table);
      if (!exists) continue;
      out[table] = db
        .prepare(`SELECT * FROM ${table}`)
        .all()
        .map((row) => JSON.stringify(row))
        .sort();
    }
    return out;
  } finally {
    db.close();
  }
}

/**
 * One statement on a SQLite file from another process, as the CLI or an operator would run it. (A second
 * SQLite library inside this process would share its POSIX locks with the store's and could corrupt it.)
 */
export function sqliteExec(path: string, sql: string, params: (string | number | null)[] = []): void {
  const script = `
    const { DatabaseSync } = require("node:sqlite");
    const [path, sql, params] = process.argv.slice(1);
    const db = new DatabaseSync(path);
    db.exec("PRAGMA busy_timeout = 5000");
    db.prepare(sql).run(...JSON.parse(params));
    db.close();`;
  execFileSync(process.execPath, ["-e", script, path, sql, JSON.stringify(params)], { stdio: "inherit" });
}
