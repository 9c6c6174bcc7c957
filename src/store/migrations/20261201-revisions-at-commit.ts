// The second migration (PostgreSQL only; SQLite has one writer at a time, so nothing changes there): a
// transaction can ask for its revisions to be assigned at its end, so the one-row counter's lock is held
// only from its last statement through COMMIT instead of from its first logged write.
//
// Every logged write still bumps the counter under its row lock, so revisions stay contiguous and in commit
// order. What changes is when: a transaction that has run `set_config('authz.defer_revisions', 'on', true)`
// (the store does, in the statement that takes its per-user lock) has its statement triggers append the
// entries to a transaction-local setting instead, and calls `authz_assign_revisions()` as its last statement
// before COMMIT: one counter bump for all of them, the log rows, the notifications, the revision returned.
// Writers that do not ask (FLIP's own, plain SQL) are logged at once, as before. A savepoint rolled back
// takes its entries with it (settings are transactional), a rolled-back transaction logs nothing.
//
// Why not a deferred constraint trigger: PostgreSQL allows only row-level constraint triggers, without
// transition tables, so one would fire per row: quadratic on the counter for bulk statements (see the first
// migration), and it would add triggers beside FLIP's tables that adoption checks pin.

import { Migration } from "@mikro-orm/migrations";
import { BasePostgreSqlPlatform } from "@mikro-orm/sql";

/** Appends entries ("kind:user" or "kind:") to the transaction's pending list. */
const APPEND = `PERFORM set_config('authz.pending_changes',
      coalesce(nullif(current_setting('authz.pending_changes', true), '') || ';', '') || entries, true);`;

export class Migration20261201RevisionsAtCommit extends Migration {
  override name = "20261201-revisions-at-commit";

  override up(): void {
    if (!(this.driver.getPlatform() instanceof BasePostgreSqlPlatform)) return;
    // As in the first migration, plus the deferred branch.
    this.addSql(`CREATE OR REPLACE FUNCTION authz_record_statement_changes() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
  change_kind text := TG_ARGV[0];
  per_user boolean := TG_ARGV[1] = 'user';
  n bigint;
  last bigint;
  entries text;
  entry record;
BEGIN
  SELECT count(*) INTO n FROM authz_rows;
  IF n = 0 THEN
    RETURN NULL;
  END IF;
  IF current_setting('authz.defer_revisions', true) = 'on' THEN
    IF per_user THEN
      SELECT string_agg(change_kind || ':' || coalesce(user_id::text, ''), ';') INTO entries FROM authz_rows;
    ELSE
      SELECT string_agg(change_kind || ':', ';') INTO entries FROM generate_series(1, n);
    END IF;
    ${APPEND}
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
    this.addSql(`CREATE OR REPLACE FUNCTION authz_record_statement_updates() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
  change_kind text := TG_ARGV[0];
  per_user boolean := TG_ARGV[1] = 'user';
  users uuid[];
  n bigint;
  last bigint;
  entries text;
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
  IF current_setting('authz.defer_revisions', true) = 'on' THEN
    IF per_user THEN
      SELECT string_agg(change_kind || ':' || coalesce(u.uid::text, ''), ';' ORDER BY u.ord) INTO entries
        FROM unnest(users) WITH ORDINALITY AS u(uid, ord);
    ELSE
      SELECT string_agg(change_kind || ':', ';') INTO entries FROM generate_series(1, n);
    END IF;
    ${APPEND}
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
    // The last statement of a deferring transaction: bumps the counter once for every pending entry (taking
    // its row lock, held through COMMIT), logs and announces them, and returns the newest revision (the
    // current one when nothing is pending, which an unchanged write reflects).
    this.addSql(`CREATE OR REPLACE FUNCTION authz_assign_revisions() RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
  pending text := nullif(current_setting('authz.pending_changes', true), '');
  n bigint;
  last bigint;
  entry record;
BEGIN
  IF pending IS NULL THEN
    SELECT revision INTO last FROM authz_revision WHERE id = 1;
    RETURN last;
  END IF;
  PERFORM set_config('authz.pending_changes', '', true);
  n := array_length(string_to_array(pending, ';'), 1);
  UPDATE authz_revision SET revision = revision + n WHERE id = 1 RETURNING revision INTO last;
  FOR entry IN
    INSERT INTO authz_change_log (revision, kind, user_id, changed_at)
      SELECT last - n + e.ord, split_part(e.entry, ':', 1), nullif(split_part(e.entry, ':', 2), '')::uuid, now()
      FROM unnest(string_to_array(pending, ';')) WITH ORDINALITY AS e(entry, ord)
      RETURNING revision, kind, user_id
  LOOP
    PERFORM pg_notify('flip_authz_changes',
      entry.revision::text || ':' || entry.kind || ':' || coalesce(entry.user_id::text, ''));
  END LOOP;
  RETURN last;
END
$fn$`);
  }
}
