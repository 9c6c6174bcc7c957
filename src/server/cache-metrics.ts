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
