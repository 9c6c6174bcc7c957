// The cached reader: the role→permission map fully in memory, and user→roles and user→profile LRUs
// (negative entries too, so a user with no roles costs no round trip either). Invalidation is driven by the
// change feed, so writes by other replicas, the CLI or plain SQL are seen; while the feed is down, every
// read goes to the source (the database, or a follower's upstream) rather than risk a stale answer.

import type { ChangeHub } from "./change-hub.ts";
import type { CatalogView, Consistency, ProfileView, Reader, UserView } from "./reader.ts";
import { type IndexedRole, RoleIndex } from "./role-index.ts";
import type { Catalog, Change, ProfileRecord, ReadSource, Revision } from "./store.ts";
import { UserCache } from "./user-cache.ts";

export interface CachedReaderOptions {
  userCacheSize: number;
  /** How long a read with an unmet at_least_as_fresh waits for the feed before asking the source. */
  freshnessWaitMs?: number;
  onError?: (error: unknown, context: string) => void;
}

export interface CacheStats {
  hits: number;
  misses: number;
  databaseReads: number;
  catalogReloads: number;
}

/**
 * A set of role ids as the user cache holds it: one shared object per distinct set (most users hold one of
 * a few sets), with its roles resolved against the last map that asked. So a cached user costs a key and a
 * reference, and a hit allocates nothing for its roles.
 */
interface RoleSet {
  readonly ids: readonly string[];
  index: RoleIndex | undefined;
  roles: IndexedRole[];
}

/** Distinct role sets shared at most; past this, the table starts again (sets already cached stay valid). */
const ROLE_SETS = 10_000;

export class CachedReader implements Reader {
  readonly stats: CacheStats = { hits: 0, misses: 0, databaseReads: 0, catalogReloads: 0 };
  readonly #source: ReadSource;
  readonly #inner: Reader;
  readonly #roles: UserCache<RoleSet>;
  #roleSets = new Map<string, RoleSet>();
  readonly #profiles: UserCache<ProfileRecord | null>;
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

  constructor(source: ReadSource, inner: Reader, options: CachedReaderOptions) {
    this.#source = source;
    this.#inner = inner;
    this.#roles = new UserCache(options.userCacheSize);
    this.#profiles = new UserCache(options.userCacheSize);
    this.#freshnessWaitMs = options.freshnessWaitMs ?? 100;
    this.#onError = options.onError ?? (() => {});
  }

  /**
   * Follows the hub (already started), then loads the role→permission map: changes the hub delivers that
   * the loaded map already reflects only cause a harmless reload.
   */
  async start(hub: ChangeHub): Promise<void> {
    // Once, however often a failed start is retried (a follower's first sync).
    this.#detach ??= hub.addListener({
      onChanges: (changes) => this.#onChanges(changes),
      onInterrupted: (error) => this.#onInterrupted(error),
      onResumed: () => this.#onResumed(),
    });
    const catalog = await this.#source.loadCatalog();
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
    return this.#roles.size;
  }

  /** Called with the new state whenever `live` changes. */
  onLiveChange(listener: (live: boolean) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Drops what this process knows of a user (after its own write, before the feed says so). */
  invalidateUser(userId: string): void {
    this.#roles.invalidate(userId);
    this.#profiles.invalidate(userId);
  }

  async catalog(consistency: Consistency): Promise<CatalogView> {
    if (!(await this.#mayServe(consistency)) || this.#index === undefined) {
      this.stats.databaseReads++;
      return this.#inner.catalog(consistency);
    }
    // A map loaded at revision R is the catalog as of R, and no catalog change lies between R and what is
    // applied (applying one waits for its reload): either revision is one the map reflects, the later one best.
    return { index: this.#index, revision: Math.max(this.#applied, this.#indexRevision) };
  }

  /** A cached user, when memory may answer now (the check hot path: no promise at all). */
  userNow(userId: string, consistency: Consistency): UserView | undefined {
    const loaded = this.#index;
    if (loaded === undefined || !this.#servesNow(consistency)) return undefined;
    const cached = this.#roles.get(userId);
    if (cached === undefined) return undefined;
    this.stats.hits++;
    return { index: loaded, roles: rolesIn(cached, loaded), revision: this.#applied };
  }

  async user(userId: string, consistency: Consistency): Promise<UserView> {
    const now = this.userNow(userId, consistency);
    if (now !== undefined) return now;
    if (!(await this.#mayServe(consistency)) || this.#index === undefined) {
      this.stats.databaseReads++;
      return this.#inner.user(userId, consistency);
    }
    const revision = this.#applied;
    let roleSet = this.#roles.get(userId);
    if (roleSet === undefined) {
      this.stats.misses++;
      roleSet = await this.#roles.load(
        userId,
        async () => this.#roleSet((await this.#source.userRoles(userId, atLeast(revision))).roleIds),
        () => this.#live,
      );
      // The load may have straddled a feed interruption: only the source's own answer is safe then.
      if (!this.#live) return this.#inner.user(userId, consistency);
    } else {
      this.stats.hits++;
    }
    const index = this.#index;
    return { index, roles: rolesIn(roleSet, index), revision };
  }

  async profile(userId: string, consistency: Consistency): Promise<ProfileView> {
    if (!(await this.#mayServe(consistency))) {
      this.stats.databaseReads++;
      return this.#inner.profile(userId, consistency);
    }
    const revision = this.#applied;
    let profile = this.#profiles.get(userId);
    if (profile === undefined) {
      this.stats.misses++;
      profile = await this.#profiles.load(
        userId,
        async () => (await this.#source.getProfile(userId, atLeast(revision))).profile,
        () => this.#live,
      );
      if (!this.#live) return this.#inner.profile(userId, consistency);
    } else {
      this.stats.hits++;
    }
    return { profile, revision };
  }

  /** The shared object for this set of role ids. */
  #roleSet(roleIds: readonly string[]): RoleSet {
    const key = roleIds.length < 2 ? (roleIds[0] ?? "") : [...roleIds].sort().join(",");
    let set = this.#roleSets.get(key);
    if (set === undefined) {
      if (this.#roleSets.size >= ROLE_SETS) this.#roleSets = new Map();
      set = { ids: Object.freeze([...roleIds]), index: undefined, roles: [] };
      this.#roleSets.set(key, set);
    }
    return set;
  }

  /** Whether memory may answer a read of this consistency right now, without waiting. */
  #servesNow(consistency: Consistency): boolean {
    if (!this.#live || consistency.kind === "full") return false;
    return consistency.kind === "cached" || this.#applied >= consistency.atLeast;
  }

  /** Serves from memory when the consistency allows it, waiting briefly for an unmet revision. */
  async #mayServe(consistency: Consistency): Promise<boolean> {
    if (this.#servesNow(consistency)) return true;
    if (!this.#live || consistency.kind !== "fresh") return false;
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

  #onChanges(changes: Change[]): void {
    // User invalidations take effect at once; the revision counts as applied only once a needed
    // catalog reload has finished, in order. A null user is every user at once (a TRUNCATE).
    for (const change of changes) {
      const cache =
        change.kind === "user_roles" ? this.#roles : change.kind === "profile" ? this.#profiles : null;
      if (cache === null) continue;
      if (change.userId !== null) cache.invalidate(change.userId);
      else cache.clear();
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
      const catalog = await this.#source.loadCatalog();
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
    this.#onError(error, "change feed interrupted; answering from the source until it resumes");
    this.#feedEpoch++;
    this.#feedUp = false;
    this.#updateLive();
    this.#forgetUsers();
  }

  #forgetUsers(): void {
    this.#roles.clear();
    this.#profiles.clear();
  }

  #onResumed(): void {
    // The feed has replayed what it missed; start from a fresh map and an empty user cache anyway.
    // An interruption that comes while this runs cancels it: only a later resume may go live again.
    const epoch = ++this.#feedEpoch;
    void (async () => {
      this.#forgetUsers();
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

/** The set's roles known to `index`, sorted by name (resolved once per map; callers only read them). */
function rolesIn(set: RoleSet, index: RoleIndex): IndexedRole[] {
  if (set.index !== index) {
    set.roles = index.rolesOf(set.ids);
    set.index = index;
  }
  return set.roles;
}

/** What a cache fill must reflect: at least what the caches already claim. */
function atLeast(revision: Revision): Consistency {
  return { kind: "fresh", atLeast: revision };
}
