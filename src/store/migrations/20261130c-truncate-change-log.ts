// PostgreSQL: log TRUNCATE too. It fires no row or statement DML triggers, so a TRUNCATE of user_role
// left every replica's caches trusting roles that were gone. One entry per truncated table, with no user:
// for user_role and user_profile that means "every user". SQLite has no TRUNCATE (a DELETE without WHERE
// fires the row triggers).

import { Migration } from "@mikro-orm/migrations";
import { BasePostgreSqlPlatform } from "@mikro-orm/sql";

const LOGGED = [
  { table: "user_role", kind: "user_roles" },
  { table: "user_profile", kind: "profile" },
  { table: "role_permission", kind: "role_permissions" },
  { table: "roles", kind: "role_permissions" },
  { table: "permission", kind: "role_permissions" },
] as const;

export class Migration20261130cTruncateChangeLog extends Migration {
  override name = "20261130c-truncate-change-log";

  override up(): void {
    if (!(this.driver.getPlatform() instanceof BasePostgreSqlPlatform)) {
      this.addSql("SELECT 1");
      return;
    }
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
    for (const { table, kind } of LOGGED) {
      const trigger = `authz_${table}_truncate_log`;
      this.addSql(`DROP TRIGGER IF EXISTS ${trigger} ON ${table}`);
      this.addSql(`CREATE TRIGGER ${trigger} AFTER TRUNCATE ON ${table}
        FOR EACH STATEMENT EXECUTE FUNCTION authz_record_truncate('${kind}')`);
    }
  }
}
