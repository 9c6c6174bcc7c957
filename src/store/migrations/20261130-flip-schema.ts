// The first migration: FLIP's six tables (adopted when FLIP already created them), our indexes, and the
// change log with its revision counter and triggers. Every statement is guarded so it is safe on a database
// FLIP's own DDL created: nothing is renamed, retyped or dropped, no row is touched.
//
// PostgreSQL logs changes with statement-level triggers: one counter bump per statement, by the number of
// entries (row-level bumps are quadratic in one transaction: each update walks the row's growing version
// chain; 20 000 rows in one statement took 9 s, holding the counter, so every other writer, all along).
// The log still gets one entry per changed row (an UPDATE that moves a row to another user logs the user it
// left too), revisions stay contiguous and in commit order, one notification per entry. TRUNCATE, which
// fires no DML trigger, logs one entry with no user ("every user"). SQLite's row-level triggers update the
// counter in place (linear); SQLite has no TRUNCATE.

import { Migration } from "@mikro-orm/migrations";
import { BasePostgreSqlPlatform } from "@mikro-orm/sql";

/** Tables whose writes are logged, with the change kind and whether rows carry a user_id. */
const LOGGED = [
  { table: "user_role", kind: "user_roles", perUser: true },
  { table: "user_profile", kind: "profile", perUser: true },
  { table: "role_permission", kind: "role_permissions", perUser: false },
  { table: "roles", kind: "role_permissions", perUser: false },
  { table: "permission", kind: "role_permissions", perUser: false },
] as const;

const INDEXES = [
  `CREATE INDEX IF NOT EXISTS user_role_role_id_idx ON user_role (role_id)`,
  `CREATE INDEX IF NOT EXISTS role_permission_role_id_idx ON role_permission (role_id)`,
];

/**
 * The audit listing pages on (timestamp, id). PostgreSQL keeps microseconds but a page cursor carries
 * milliseconds, so there the listing orders by the UTC time truncated to milliseconds: an immutable
 * expression, hence indexable. SQLite stores milliseconds already.
 */
export const AUDIT_TIME_POSTGRES = `date_trunc('milliseconds', "timestamp" AT TIME ZONE 'UTC')`;

const AUDIT_INDEXES_POSTGRES = [
  `CREATE INDEX IF NOT EXISTS users_audit_timestamp_id_idx ON users_audit ((${AUDIT_TIME_POSTGRES}), id)`,
  `CREATE INDEX IF NOT EXISTS users_audit_user_id_timestamp_id_idx ON users_audit (user_id, (${AUDIT_TIME_POSTGRES}), id)`,
];

const AUDIT_INDEXES_SQLITE = [
  `CREATE INDEX IF NOT EXISTS users_audit_timestamp_id_idx ON users_audit ("timestamp", id)`,
  `CREATE INDEX IF NOT EXISTS users_audit_user_id_timestamp_id_idx ON users_audit (user_id, "timestamp", id)`,
];

export class Migration20261130FlipSchema extends Migration {
  override name = "20261130-flip-schema";

  override up(): void {
    if (this.driver.getPlatform() instanceof BasePostgreSqlPlatform) this.postgres();
    else this.sqlite();
  }

  private postgres(): void {
    // FLIP's DDL verbatim, made conditional.
    this.addSql(`CREATE TABLE IF NOT EXISTS permission (id UUID NOT NULL, permission_name VARCHAR NOT NULL,
      permission_description VARCHAR NOT NULL, CONSTRAINT permission_pkey PRIMARY KEY (id))`);
    this.addSql(`CREATE TABLE IF NOT EXISTS roles (id UUID NOT NULL, name VARCHAR NOT NULL, description VARCHAR NOT NULL,
      created_at TIMESTAMP WITH TIME ZONE NOT NULL, updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
      CONSTRAINT roles_pkey PRIMARY KEY (id), CONSTRAINT roles_name_key UNIQUE (name))`);
    this.addSql(`CREATE TABLE IF NOT EXISTS user_profile (user_id UUID NOT NULL, name VARCHAR(255) NOT NULL,
      organisation VARCHAR(255) NOT NULL, created_at TIMESTAMP WITH TIME ZONE NOT NULL,
      updated_at TIMESTAMP WITH TIME ZONE NOT NULL, CONSTRAINT user_profile_pkey PRIMARY KEY (user_id))`);
    this.addSql(`CREATE TABLE IF NOT EXISTS users_audit (id UUID NOT NULL, action VARCHAR NOT NULL, user_id UUID NOT NULL,
      modified_by_user_id UUID NOT NULL, "timestamp" TIMESTAMP WITH TIME ZONE NOT NULL,
      CONSTRAINT users_audit_pkey PRIMARY KEY (id))`);
    this.addSql(`CREATE TABLE IF NOT EXISTS role_permission (id UUID NOT NULL, role_id UUID NOT NULL, permission_id UUID NOT NULL,
      CONSTRAINT role_permission_pkey PRIMARY KEY (id),
      CONSTRAINT role_permission_permission_id_fkey FOREIGN KEY (permission_id) REFERENCES permission (id) ON DELETE CASCADE,
      CONSTRAINT role_permission_role_id_fkey FOREIGN KEY (role_id) REFERENCES roles (id) ON DELETE CASCADE)`);
    this.addSql(`CREATE TABLE IF NOT EXISTS user_role (user_id UUID NOT NULL, role_id UUID NOT NULL,
      CONSTRAINT user_role_pkey PRIMARY KEY (user_id, role_id),
      CONSTRAINT user_role_role_id_fkey FOREIGN KEY (role_id) REFERENCES roles (id))`);
    for (const sql of [...INDEXES, ...AUDIT_INDEXES_POSTGRES]) this.addSql(sql);

    this.addSql(`CREATE TABLE IF NOT EXISTS authz_revision (id integer NOT NULL PRIMARY KEY CHECK (id = 1),
      revision bigint NOT NULL)`);
    this.addSql(`INSERT INTO authz_revision (id, revision) VALUES (1, 0) ON CONFLICT (id) DO NOTHING`);
    this.addSql(`CREATE TABLE IF NOT EXISTS authz_change_log (revision bigint NOT NULL PRIMARY KEY, kind text NOT NULL,
      user_id uuid NULL, changed_at timestamptz NOT NULL)`);
    // The counter UPDATE holds its row lock until commit, so a later revision is never committed before an
    // earlier one (a sequence would hand ids out in start order, not commit order).
    // `authz_rows` is the statement's inserted (INSERT) or deleted (DELETE) rows. PL/pgSQL compiles a trigger
    // function once per table, so the per-user branch is only ever planned for tables with a user_id.
    this.addSql(`CREATE OR REPLACE FUNCTION authz_record_statement_changes() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
  change_kind text := TG_ARGV[0];
  per_user boolean := TG_ARGV[1] = 'user';
  n bigint;
  last bigint;
  entry record;
BEGIN
  SELECT count(*) INTO n FROM authz_rows;
  IF n = 0 THEN
    RETURN NULL;
  END IF;
  UPDATE authz_revision SET revision = revision + n WHERE id = 1 RETURNING revision INTO last;
  IF per_user THEN
    INSERT INTO authz_change_log (revision, kind, user_id, changed_at)
      SELECT last - n + row_number() OVER (), change_kind, user_id, now() FROM authz_rows;
  ELSE
    INSERT INTO authz_change_log (revision, kind, user_id, changed_at)
      SELECT g, change_kind, NULL, now() FROM generate_series(last - n + 1, last) g;
  END IF;
  FOR entry IN SELECT revision, user_id FROM authz_change_log WHERE revision > last - n ORDER BY revision LOOP
    PERFORM pg_notify('flip_authz_changes',
      entry.revision::text || ':' || change_kind || ':' || coalesce(entry.user_id::text, ''));
  END LOOP;
  RETURN NULL;
END
$fn$`);
    // UPDATE: only rows that really changed count. Transition tables cannot pair old and new versions of a
    // row, so a changed row is one not found verbatim on the other side (EXCEPT ALL); its user is logged,
    // and so is a user a changed row left (not among the changed rows' users: a move to another user).
    this.addSql(`CREATE OR REPLACE FUNCTION authz_record_statement_updates() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
  change_kind text := TG_ARGV[0];
  per_user boolean := TG_ARGV[1] = 'user';
  users uuid[];
  n bigint;
  last bigint;
  entry record;
BEGIN
  IF per_user THEN
    WITH changed_new AS (SELECT * FROM authz_new EXCEPT ALL SELECT * FROM authz_old),
         changed_old AS (SELECT * FROM authz_old EXCEPT ALL SELECT * FROM authz_new)
    SELECT coalesce(array_agg(uid), '{}') INTO users FROM (
      SELECT user_id AS uid FROM changed_new
      UNION ALL
      SELECT user_id FROM changed_old WHERE user_id NOT IN (SELECT user_id FROM changed_new)) affected;
    n := cardinality(users);
  ELSE
    SELECT count(*) INTO n FROM (SELECT * FROM authz_new EXCEPT ALL SELECT * FROM authz_old) changed;
  END IF;
  IF n = 0 THEN
    RETURN NULL;
  END IF;
  UPDATE authz_revision SET revision = revision + n WHERE id = 1 RETURNING revision INTO last;
  IF per_user THEN
    INSERT INTO authz_change_log (revision, kind, user_id, changed_at)
      SELECT last - n + u.ord, change_kind, u.uid, now() FROM unnest(users) WITH ORDINALITY AS u(uid, ord);
  ELSE
    INSERT INTO authz_change_log (revision, kind, user_id, changed_at)
      SELECT g, change_kind, NULL, now() FROM generate_series(last - n + 1, last) g;
  END IF;
  FOR entry IN SELECT revision, user_id FROM authz_change_log WHERE revision > last - n ORDER BY revision LOOP
    PERFORM pg_notify('flip_authz_changes',
      entry.revision::text || ':' || change_kind || ':' || coalesce(entry.user_id::text, ''));
  END LOOP;
  RETURN NULL;
END
$fn$`);
    this.addSql(`CREATE OR REPLACE FUNCTION authz_record_truncate() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
  last bigint;
BEGIN
  UPDATE authz_revision SET revision = revision + 1 WHERE id = 1 RETURNING revision INTO last;
  INSERT INTO authz_change_log (revision, kind, user_id, changed_at) VALUES (last, TG_ARGV[0], NULL, now());
  PERFORM pg_notify('flip_authz_changes', last::text || ':' || TG_ARGV[0] || ':');
  RETURN NULL;
END
$fn$`);
    for (const { table, kind, perUser } of LOGGED) {
      const args = `'${kind}', '${perUser ? "user" : "none"}'`;
      for (const [suffix, event, rows] of [
        ["insert", "INSERT", "NEW"],
        ["delete", "DELETE", "OLD"],
      ] as const) {
        const trigger = `authz_${table}_${suffix}_log`;
        this.addSql(`DROP TRIGGER IF EXISTS ${trigger} ON ${table}`);
        this.addSql(`CREATE TRIGGER ${trigger} AFTER ${event} ON ${table} REFERENCING ${rows} TABLE AS authz_rows
          FOR EACH STATEMENT EXECUTE FUNCTION authz_record_statement_changes(${args})`);
      }
      this.addSql(`DROP TRIGGER IF EXISTS authz_${table}_update_log ON ${table}`);
      this.addSql(`CREATE TRIGGER authz_${table}_update_log AFTER UPDATE ON ${table}
        REFERENCING OLD TABLE AS authz_old NEW TABLE AS authz_new
        FOR EACH STATEMENT EXECUTE FUNCTION authz_record_statement_updates(${args})`);
      this.addSql(`DROP TRIGGER IF EXISTS authz_${table}_truncate_log ON ${table}`);
      this.addSql(`CREATE TRIGGER authz_${table}_truncate_log AFTER TRUNCATE ON ${table}
        FOR EACH STATEMENT EXECUTE FUNCTION authz_record_truncate('${kind}')`);
    }
  }

  private sqlite(): void {
    // SQLite types as MikroORM maps them: uuids as text, timestamps as `datetime` holding epoch milliseconds.
    this.addSql(`CREATE TABLE IF NOT EXISTS permission (id text NOT NULL PRIMARY KEY, permission_name text NOT NULL,
      permission_description text NOT NULL)`);
    this.addSql(`CREATE TABLE IF NOT EXISTS roles (id text NOT NULL PRIMARY KEY, name text NOT NULL UNIQUE,
      description text NOT NULL, created_at datetime NOT NULL, updated_at datetime NOT NULL)`);
    this.addSql(`CREATE TABLE IF NOT EXISTS user_profile (user_id text NOT NULL PRIMARY KEY, name text NOT NULL,
      organisation text NOT NULL, created_at datetime NOT NULL, updated_at datetime NOT NULL)`);
    this.addSql(`CREATE TABLE IF NOT EXISTS users_audit (id text NOT NULL PRIMARY KEY, action text NOT NULL,
      user_id text NOT NULL, modified_by_user_id text NOT NULL, "timestamp" datetime NOT NULL)`);
    this.addSql(`CREATE TABLE IF NOT EXISTS role_permission (id text NOT NULL PRIMARY KEY,
      role_id text NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
      permission_id text NOT NULL REFERENCES permission (id) ON DELETE CASCADE)`);
    this.addSql(`CREATE TABLE IF NOT EXISTS user_role (user_id text NOT NULL, role_id text NOT NULL REFERENCES roles (id),
      PRIMARY KEY (user_id, role_id))`);
    for (const sql of [...INDEXES, ...AUDIT_INDEXES_SQLITE]) this.addSql(sql);

    this.addSql(`CREATE TABLE IF NOT EXISTS authz_revision (id integer NOT NULL PRIMARY KEY CHECK (id = 1),
      revision integer NOT NULL)`);
    this.addSql(`INSERT OR IGNORE INTO authz_revision (id, revision) VALUES (1, 0)`);
    this.addSql(`CREATE TABLE IF NOT EXISTS authz_change_log (revision integer NOT NULL PRIMARY KEY, kind text NOT NULL,
      user_id text NULL, changed_at datetime NOT NULL)`);
    // SQLite has one writer at a time, so bumping the counter inside the writing transaction is enough.
    const nowMs = `CAST(ROUND((julianday('now') - 2440587.5) * 86400000) AS INTEGER)`;
    const log = (kind: string, user: string) => `
      UPDATE authz_revision SET revision = revision + 1 WHERE id = 1;
      INSERT INTO authz_change_log (revision, kind, user_id, changed_at)
        SELECT revision, '${kind}', ${user}, ${nowMs} FROM authz_revision WHERE id = 1;`;
    for (const { table, kind, perUser } of LOGGED) {
      const user = (row: "NEW" | "OLD") => (perUser ? `${row}.user_id` : "NULL");
      this.addSql(`CREATE TRIGGER IF NOT EXISTS authz_${table}_insert_log AFTER INSERT ON ${table}
        BEGIN ${log(kind, user("NEW"))} END`);
      this.addSql(`CREATE TRIGGER IF NOT EXISTS authz_${table}_delete_log AFTER DELETE ON ${table}
        BEGIN ${log(kind, user("OLD"))} END`);
      // Only real changes count; a row moved to another user logs the user it left too.
      this.addSql(`CREATE TRIGGER IF NOT EXISTS authz_${table}_update_log AFTER UPDATE ON ${table}
        WHEN ${changedCondition(table)}
        BEGIN ${log(kind, user("NEW"))} END`);
      if (perUser) {
        this.addSql(`CREATE TRIGGER IF NOT EXISTS authz_${table}_move_log AFTER UPDATE ON ${table}
          WHEN OLD.user_id IS NOT NEW.user_id
          BEGIN ${log(kind, "OLD.user_id")} END`);
      }
    }
  }
}

const COLUMNS: Record<string, string[]> = {
  user_role: ["user_id", "role_id"],
  user_profile: ["user_id", "name", "organisation", "created_at", "updated_at"],
  role_permission: ["id", "role_id", "permission_id"],
  roles: ["id", "name", "description", "created_at", "updated_at"],
  permission: ["id", "permission_name", "permission_description"],
};

function changedCondition(table: string): string {
  return (COLUMNS[table] ?? []).map((column) => `OLD.${column} IS NOT NEW.${column}`).join(" OR ");
}
