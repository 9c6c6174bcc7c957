// PostgreSQL: log changes with statement-level triggers. The row-level ones bumped the revision counter once
// per row, and updating one row n times in a transaction is quadratic (each update walks the row's growing
// version chain): FLIP inserting (or updating) 20 000 rows in one statement took 9 s, holding the counter,
// so every other writer, all along. Now one bump per statement, by the number of entries; the log still
// gets one entry per changed row (an UPDATE that moves a row to another user logs the user it left too),
// revisions stay contiguous and in commit order, one notification per entry. SQLite's row-level triggers
// update the counter in place (linear) and stay.

import { Migration } from "@mikro-orm/migrations";
import { BasePostgreSqlPlatform } from "@mikro-orm/sql";

const LOGGED = [
  { table: "user_role", kind: "user_roles", perUser: true },
  { table: "user_profile", kind: "profile", perUser: true },
  { table: "role_permission", kind: "role_permissions", perUser: false },
  { table: "roles", kind: "role_permissions", perUser: false },
  { table: "permission", kind: "role_permissions", perUser: false },
] as const;

export class Migration20261130bStatementChangeLog extends Migration {
  override name = "20261130b-statement-change-log";

  override up(): void {
    if (!(this.driver.getPlatform() instanceof BasePostgreSqlPlatform)) {
      this.addSql("SELECT 1");
      return;
    }
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
      const trigger = `authz_${table}_update_log`;
      this.addSql(`DROP TRIGGER IF EXISTS ${trigger} ON ${table}`);
      this.addSql(`CREATE TRIGGER ${trigger} AFTER UPDATE ON ${table}
        REFERENCING OLD TABLE AS authz_old NEW TABLE AS authz_new
        FOR EACH STATEMENT EXECUTE FUNCTION authz_record_statement_updates(${args})`);
    }
  }
}
