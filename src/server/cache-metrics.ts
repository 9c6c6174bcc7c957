// Cache gauges on /metrics: hits, misses and database reads of the check path, read when scraped.

import { Gauge, type Registry } from "prom-client";

export interface CacheSource {
  readonly stats: { hits: number; misses: number; databaseReads: number; catalogReloads: number };
  readonly live: boolean;
  readonly appliedRevision: number;
  readonly cachedUsers: number;
}

export function registerCacheMetrics(registry: Registry, source: CacheSource): void {
  const gauge = (name: string, help: string, read: () => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(read());
      },
    });
  gauge(
    "authz_cache_hits",
    "User→roles lookups answered from memory (since start).",
    () => source.stats.hits,
  );
  gauge(
    "authz_cache_misses",
    "User→roles lookups that read the database (since start).",
    () => source.stats.misses,
  );
  gauge(
    "authz_cache_bypass_reads",
    "Reads sent to the database by fully_consistent, an unmet at_least_as_fresh or a down change feed.",
    () => source.stats.databaseReads,
  );
  gauge(
    "authz_catalog_reloads",
    "Reloads of the role→permission map after changes.",
    () => source.stats.catalogReloads,
  );
  gauge("authz_cache_users", "Users whose roles are cached now.", () => source.cachedUsers);
  gauge("authz_cache_live", "1 while the caches follow the change feed, else 0.", () =>
    source.live ? 1 : 0,
  );
  gauge(
    "authz_applied_revision",
    "Every change up to this revision is reflected in the caches.",
    () => source.appliedRevision,
  );
}

/** Fed with the database's latest revision, read now and then (the app does it with its health ping). */
export interface FeedLag {
  observe(databaseRevision: number, now?: number): void;
}

/** Most sampled revisions remembered while the caches are behind (one a sample). */
const PENDING_KEPT = 1000;

/**
 * Change-feed lag against the database: `authz_database_revision` (last read), and, read when scraped,
 * `authz_change_feed_lag_revisions` (how far the caches are behind it) and `authz_change_feed_lag_seconds`
 * (how long ago the oldest database revision the caches have not applied yet was first read; 0 when they
 * are up to date). Its resolution is the sampling interval.
 */
export function registerFeedLag(registry: Registry, source: CacheSource): FeedLag {
  let database = 0;
  /** Revisions read from the database and not applied yet, with when each was first read. */
  let pending: { revision: number; seen: number }[] = [];
  const settle = () => {
    const applied = source.appliedRevision;
    if (pending.length > 0 && (pending[0] as { revision: number }).revision <= applied) {
      pending = pending.filter((entry) => entry.revision > applied);
    }
  };
  new Gauge({
    name: "authz_database_revision",
    help: "The latest revision committed in the database, as last read (every few seconds).",
    registers: [registry],
    collect() {
      this.set(database);
    },
  });
  new Gauge({
    name: "authz_change_feed_lag_revisions",
    help: "Revisions committed in the database (as last read) that the caches have not applied yet.",
    registers: [registry],
    collect() {
      this.set(Math.max(0, database - source.appliedRevision));
    },
  });
  new Gauge({
    name: "authz_change_feed_lag_seconds",
    help: "How long the caches have been behind the database: since the oldest revision read from it and not applied yet was read; 0 when up to date.",
    registers: [registry],
    collect() {
      settle();
      const oldest = pending[0];
      this.set(oldest === undefined ? 0 : (Date.now() - oldest.seen) / 1000);
    },
  });
  return {
    observe(revision, now = Date.now()) {
      database = revision;
      settle();
      const last = pending[pending.length - 1];
      if (revision > source.appliedRevision && (last === undefined || revision > last.revision)) {
        if (pending.length >= PENDING_KEPT) pending.splice(1, 1);
        pending.push({ revision, seen: now });
      }
    },
  };
}
