// Gives the pool back the clients whose connection PostgreSQL ended while they were checked out and that
// nobody releases. Kysely, under MikroORM's em.transactional, never releases a client whose BEGIN, COMMIT
// or ROLLBACK failed (its ControlledTransaction drops the connection without releasing it). When
// PostgreSQL ends connections (a restart, a failover, pg_terminate_backend) as transactions start or end,
// those clients stay checked out for ever: each takes one of the pool's slots for good, so enough of them
// leave the store with no connection at all, and pool.end() (store.close(), so the shutdown) waits for
// them for ever. Seen in a test that ends the service's backends: every close after it hung.

import type pg from "pg";

/** How long a client whose connection ended may stay out before it is released for its holder. */
export const LOST_CLIENT_GRACE_MS = 1_000;

/**
 * Wraps `pool.connect()` (the promise form, which Kysely uses) so that a client whose connection ends while
 * it is checked out, and which is still out LOST_CLIENT_GRACE_MS later, is released with an error (so the
 * pool discards it). Its holder could not use it any more anyway. The holder's own release, before or
 * after, becomes a no-op instead of pg-pool's double-release error.
 */
export function reclaimLostClients(pool: pg.Pool): void {
  const connect = pool.connect.bind(pool) as (...args: unknown[]) => unknown;
  pool.connect = ((...args: unknown[]) => {
    if (args.length > 0) return connect(...args); // the callback form: pg-pool's own pool.query
    return (connect() as Promise<pg.PoolClient>).then((client) => {
      watch(client);
      return client;
    });
  }) as typeof pool.connect;
}

function watch(client: pg.PoolClient): void {
  const release = client.release;
  let released = false;
  let timer: NodeJS.Timeout | undefined;
  const lost = () => {
    timer = setTimeout(() => {
      if (!released) client.release(new Error("the connection ended while the client was checked out"));
    }, LOST_CLIENT_GRACE_MS);
    timer.unref();
  };
  client.release = ((error?: Error | boolean) => {
    if (released) return;
    released = true;
    client.off("end", lost);
    clearTimeout(timer);
    release(error);
  }) as typeof client.release;
  // pg's Client sets _ended when its connection has ended (no public accessor; pg is pinned exactly).
  if ((client as unknown as { _ended?: boolean })._ended) lost();
  else client.once("end", lost);
}
