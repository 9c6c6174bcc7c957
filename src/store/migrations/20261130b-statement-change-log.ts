// PostgreSQL: log INSERTs and DELETEs with statement-level triggers. The row-level ones bumped the revision
// counter once per row, and updating one row n times in a transaction is quadratic (each update walks the
// row's growing version chain): FLIP inserting 20 000 user_role rows in one statement took 9 s, holding the
// counter (so every other writer) all along. Now one bump per statement, by the number of rows; the log
// still gets one entry per row, revisions stay contiguous and in commit order, one notification per entry.
// UPDATEs keep the row-level triggers (a change is only logged when the row really changed). SQLite's
// row-level triggers update the counter in place and stay.

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
    }
  }
}
