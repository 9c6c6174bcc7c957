// The third migration (PostgreSQL only): a deferring transaction's revisions are assigned inside its COMMIT,
// so the one-row counter's lock is held only while PostgreSQL commits, never across a round trip to the
// service. With the second migration the last statement before COMMIT took the lock, and it stayed held
// while the answer went to the service and the service sent COMMIT: under load, one event-loop turn of the
// service per write, with every other writer queued behind it on the counter (measured: most backends
// waiting on the lock holder's transaction, and the holder idle in transaction).
//
// How: `authz_defer_revisions()`, called in the statement that takes the write's per-user lock, asks for
// deferral as before (the transaction-local setting the statement triggers read) and inserts one row into
// `authz_pending_commit`, whose DEFERRABLE INITIALLY DEFERRED constraint trigger then fires at COMMIT, after
// every statement of the transaction: it calls `authz_assign_revisions()` (one counter bump for all pending
// entries, the log rows, the notifications) and tells the service the revision with a NOTICE (message
// `authz_commit_revision`, detail `<txid>:<revision>`), which arrives before COMMIT's answer on the same
// connection. The row is deleted again at once (a deferred trigger still fires for a row its own transaction
// deleted: it is fetched regardless of visibility), so the unlogged table never holds a live row.
//
// Why a table of our own: constraint triggers can only be row-level AFTER triggers on a table; one on FLIP's
// tables would fire per changed row and sit beside the triggers adoption checks pin.

import { Migration } from "@mikro-orm/migrations";
import { BasePostgreSqlPlatform } from "@mikro-orm/sql";

export class Migration20261202RevisionsInCommit extends Migration {
  override name = "20261202-revisions-in-commit";

  override up(): void {
    if (!(this.driver.getPlatform() instanceof BasePostgreSqlPlatform)) return;
    this.addSql("CREATE UNLOGGED TABLE authz_pending_commit (txid bigint NOT NULL)");
    // Returns the transaction's id, which the NOTICE at COMMIT names. Asks once per transaction; makes sure
    // a NOTICE reaches the client whatever client_min_messages says (for this transaction only).
    this.addSql(`CREATE FUNCTION authz_defer_revisions() RETURNS bigint LANGUAGE plpgsql AS $fn$
BEGIN
  IF current_setting('authz.defer_revisions', true) IS DISTINCT FROM 'on' THEN
    PERFORM set_config('authz.defer_revisions', 'on', true);
    IF current_setting('client_min_messages') IN ('warning', 'error') THEN
      PERFORM set_config('client_min_messages', 'notice', true);
    END IF;
    INSERT INTO authz_pending_commit (txid) VALUES (txid_current());
    DELETE FROM authz_pending_commit WHERE txid = txid_current();
  END IF;
  RETURN txid_current();
END
$fn$`);
    // Committing writers queue on an advisory lock before they touch the counter: one is woken at a time as
    // each commits, where waiting on the counter's row lock itself wakes every waiter at each commit to
    // re-check the row (measured with 32 clients: all of them in COMMIT, a third on the lock manager's
    // own lock). Writers that do not defer (plain SQL) still meet these on the row lock.
    this.addSql(`CREATE FUNCTION authz_commit_revisions() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
  last bigint;
BEGIN
  IF nullif(current_setting('authz.pending_changes', true), '') IS NOT NULL THEN
    PERFORM pg_advisory_xact_lock(17222, 0);
  END IF;
  last := authz_assign_revisions();
  RAISE NOTICE USING MESSAGE = 'authz_commit_revision', DETAIL = txid_current()::text || ':' || last::text;
  RETURN NULL;
END
$fn$`);
    this.addSql(`CREATE CONSTRAINT TRIGGER authz_commit_revisions AFTER INSERT ON authz_pending_commit
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION authz_commit_revisions()`);
  }
}
