// The cached reader: the role→permission map fully in memory and a user→roles LRU (negative entries too,
// so a user with no roles costs no round trip either). Invalidation is driven by the store's change feed,
// so writes by other replicas, the CLI or plain SQL are seen; while the feed is down, every read goes to
// the database rather than risk a stale answer.

import type { ChangeHub } from "./change-hub.ts";
import { Lru } from "./lru.ts";
import type { CatalogView, Consistency, Reader, UserView } from "./reader.ts";
import { RoleIndex } from "./role-index.ts";
import type { Catalog, Change, Revision, Store } from "./store.ts";

export interface CachedReaderOptions {
  userCacheSize: number;
  /** How long a read with an unmet at_least_as_fresh waits for the feed before asking the database. */
  freshnessWaitMs?: number;
  onError?: (error: unknown, context: string) => void;
}

export interface CacheStats {
  hits: number;
  misses: number;
  databaseReads: number;
  catalogReloads: number;
}

interface Inflight {
  promise: Promise<string[]>;
  stale: boolean;
}

export class CachedReader implements Reader {
  readonly stats: CacheStats = { hits: 0, misses: 0, databaseReads: 0, catalogReloads: 0 };
  readonly #store: Store;
  readonly #inner: Reader;
  readonly #users: Lru<string, string[]>;
  readonly #inflight = new Map<string, Inflight>();
  readonly #freshnessWaitMs: number;
  readonly #onError: (error: unknown, context: string) => void;
  #index: RoleIndex | undefined;
  /** The revision the loaded map reflects. */
  #indexRevision = 0;
  /** Every change up to here is reflected in the caches. */
  #applied: Revision = 0;
  /** False until started, while the change feed is interrupted and while a needed catalog reload fails:
   * then reads bypass the caches. */
  #live = false;
  #started = false;
  #closed = false;
  #feedUp = true;
  /** Bumped by every interruption and resume, so a resume overtaken by a new interruption does nothing. */
  #feedEpoch = 0;
  #catalogOk = true;
  #pending: Change[] = [];
  #draining: Promise<void> | undefined;
  #waiters = new Set<{ revision: Revision; resolve: (met: boolean) => void; timer: NodeJS.Timeout }>();
  #detach: (() => void) | undefined;
  #listeners = new Set<(live: boolean) => void>();

  constructor(store: Store, inner: Reader, options: CachedReaderOptions) {
    this.#store = store;
    this.#inner = inner;
    this.#users = new Lru(options.userCacheSize);
    this.#freshnessWaitMs = options.freshnessWaitMs ?? 100;
    this.#onError = options.onError ?? (() => {});
  }

  /**
   * Follows the hub (already started), then loads the role→permission map: changes the hub delivers that
   * the loaded map already reflects only cause a harmless reload.
   */
  async start(hub: ChangeHub): Promise<void> {
    this.#detach = hub.addListener({
      onChanges: (changes) => this.#onChanges(changes),
      onInterrupted: (error) => this.#onInterrupted(error),
      onResumed: () => this.#onResumed(),
    });
    const catalog = await this.#store.loadCatalog();
    // A change delivered meanwhile may have reloaded a newer map already: keep that one.
    this.#adopt(catalog);
    if (catalog.revision > this.#applied) this.#applied = catalog.revision;
    this.#feedUp = hub.connected;
    this.#started = true;
    this.#updateLive();
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#updateLive();
    for (const waiter of this.#waiters) {
      clearTimeout(waiter.timer);
      waiter.resolve(false);
    }
    this.#waiters.clear();
    this.#detach?.();
    await this.#draining;
  }

  /** True when the caches are loaded and following the feed (health reports this). */
  get live(): boolean {
    return this.#live;
  }

  get appliedRevision(): Revision {
    return this.#applied;
  }

  get cachedUsers(): number {
    return this.#users.size;
  }

  /** Called with the new state whenever `live` changes. */
  onLiveChange(listener: (live: boolean) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Drops what this process knows of a user's roles (after its own write, before the feed says so). */
  invalidateUser(userId: string): void {
    this.#users.delete(userId);
    const inflight = this.#inflight.get(userId);
    if (inflight) inflight.stale = true;
  }

  /** Every user's roles changed at once (a TRUNCATE of user_role). */
  #invalidateAllUsers(): void {
    this.#users.clear();
    for (const inflight of this.#inflight.values()) inflight.stale = true;
  }

  async catalog(consistency: Consistency): Promise<CatalogView> {
    if (!(await this.#mayServe(consistency)) || this.#index === undefined) {
      this.stats.databaseReads++;
      return this.#inner.catalog(consistency);
    }
    return { index: this.#index, revision: this.#applied };
  }

  async user(userId: string, consistency: Consistency): Promise<UserView> {
    if (!(await this.#mayServe(consistency)) || this.#index === undefined) {
      this.stats.databaseReads++;
      return this.#inner.user(userId, consistency);
    }
    const revision = this.#applied;
    let roleIds = this.#users.get(userId);
    if (roleIds === undefined) {
      this.stats.misses++;
      roleIds = await this.#load(userId);
      // The load may have straddled a feed interruption: only the database's answer is safe then.
      if (!this.#live) return this.#inner.user(userId, consistency);
    } else {
      this.stats.hits++;
    }
    const index = this.#index;
    return { index, roles: index.rolesOf(roleIds), revision };
  }

  /** Serves from memory when the consistency allows it, waiting briefly for an unmet revision. */
  async #mayServe(consistency: Consistency): Promise<boolean> {
    if (!this.#live || consistency.kind === "full") return false;
    if (consistency.kind === "cached" || this.#applied >= consistency.atLeast) return true;
    return this.waitFor(consistency.atLeast, this.#freshnessWaitMs);
  }

  /** Resolves true once every change up to `revision` is reflected here, false after `timeoutMs`. */
  waitFor(revision: Revision, timeoutMs: number): Promise<boolean> {
    if (this.#applied >= revision) return Promise.resolve(true);
    return new Promise((resolve) => {
      const waiter = {
        revision,
        resolve,
        timer: setTimeout(() => {
          this.#waiters.delete(waiter);
          resolve(false);
        }, timeoutMs),
      };
      this.#waiters.add(waiter);
    });
  }

  /** One database read per user at a time; its answer is cached unless a change overtook it. */
  #load(userId: string): Promise<string[]> {
    // A read that a change overtook may predate it: a later caller (maybe with at_least_as_fresh past that
    // change) must not share its answer, only start its own.
    const existing = this.#inflight.get(userId);
    if (existing && !existing.stale) return existing.promise;
    const settle = () => {
      if (this.#inflight.get(userId) === inflight) this.#inflight.delete(userId);
    };
    const inflight: Inflight = {
      stale: false,
      promise: this.#store.userRoles(userId).then(
        (result) => {
          settle();
          if (!inflight.stale && this.#live) this.#users.set(userId, result.roleIds);
          return result.roleIds;
        },
        (error: unknown) => {
          settle();
          throw error;
        },
      ),
    };
    this.#inflight.set(userId, inflight);
    return inflight.promise;
  }

  #onChanges(changes: Change[]): void {
    // User invalidations take effect at once; the revision counts as applied only once a needed
    // catalog reload has finished, in order.
    for (const change of changes) {
      if (change.kind !== "user_roles") continue;
      if (change.userId !== null) this.invalidateUser(change.userId);
      else this.#invalidateAllUsers();
    }
    this.#pending.push(...changes);
    this.#drain();
  }

  #drain(): void {
    if (this.#draining) return;
    this.#draining = (async () => {
      while (this.#pending.length > 0) {
        const batch = this.#pending;
        this.#pending = [];
        const last = batch[batch.length - 1];
        if (last === undefined) continue;
        if (batch.some((change) => change.kind === "role_permissions")) {
          if (!(await this.#reloadCatalog())) {
            // The database did not answer: keep the batch, stop trusting the caches until it does.
            this.#pending.unshift(...batch);
            this.#catalogOk = false;
            this.#updateLive();
            await new Promise((resolve) => setTimeout(resolve, 250));
            if (this.#closed) return;
            continue;
          }
          this.#catalogOk = true;
          this.#updateLive();
        }
        if (last.revision > this.#applied) this.#applied = last.revision;
        this.#releaseWaiters();
      }
    })().finally(() => {
      this.#draining = undefined;
      if (this.#pending.length > 0) this.#drain();
    });
  }

  async #reloadCatalog(): Promise<boolean> {
    try {
      const catalog = await this.#store.loadCatalog();
      this.stats.catalogReloads++;
      this.#adopt(catalog);
      return true;
    } catch (error) {
      this.#onError(error, "catalog reload");
      return false;
    }
  }

  /** Installs a loaded map unless the one in place reflects a later revision (loads may finish out of order). */
  #adopt(catalog: Catalog): void {
    if (this.#index !== undefined && catalog.revision < this.#indexRevision) return;
    this.#index = new RoleIndex(catalog);
    this.#indexRevision = catalog.revision;
  }

  #releaseWaiters(): void {
    for (const waiter of this.#waiters) {
      if (waiter.revision <= this.#applied) {
        clearTimeout(waiter.timer);
        this.#waiters.delete(waiter);
        waiter.resolve(true);
      }
    }
  }

  #onInterrupted(error: Error): void {
    this.#onError(error, "change feed interrupted; answering from the database until it resumes");
    this.#feedEpoch++;
    this.#feedUp = false;
    this.#updateLive();
    this.#invalidateAllUsers();
  }

  #onResumed(): void {
    // The feed has replayed what it missed; start from a fresh map and an empty user cache anyway.
    // An interruption that comes while this runs cancels it: only a later resume may go live again.
    const epoch = ++this.#feedEpoch;
    void (async () => {
      this.#users.clear();
      while (!this.#closed && epoch === this.#feedEpoch && !(await this.#reloadCatalog())) {
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
      await this.#draining;
      if (epoch !== this.#feedEpoch) return;
      this.#feedUp = true;
      this.#updateLive();
    })();
  }

  #updateLive(): void {
    const live = this.#started && !this.#closed && this.#feedUp && this.#catalogOk;
    if (this.#live === live) return;
    this.#live = live;
    for (const listener of this.#listeners) listener(live);
  }
}
