// One thing known per user (their roles, their profile): an LRU of answers, and at most one load per user
// at a time. A load that a change overtook still answers its own caller, but is neither cached nor shared
// with later callers, who may need to see that change.

import { Lru } from "./lru.ts";

interface Inflight<V> {
  promise: Promise<V>;
  stale: boolean;
}

export class UserCache<V> {
  readonly #entries: Lru<string, V>;
  readonly #inflight = new Map<string, Inflight<V>>();

  constructor(capacity: number) {
    this.#entries = new Lru(capacity);
  }

  get size(): number {
    return this.#entries.size;
  }

  get(userId: string): V | undefined {
    return this.#entries.get(userId);
  }

  /**
   * The answer of `fetch` for the user, sharing a load already under way unless a change overtook it.
   * The answer is cached only if no change overtook the load and `keep()` still holds when it lands.
   */
  load(userId: string, fetch: () => Promise<V>, keep: () => boolean): Promise<V> {
    const existing = this.#inflight.get(userId);
    if (existing && !existing.stale) return existing.promise;
    const settle = () => {
      if (this.#inflight.get(userId) === inflight) this.#inflight.delete(userId);
    };
    const inflight: Inflight<V> = {
      stale: false,
      promise: fetch().then(
        (value) => {
          settle();
          if (!inflight.stale && keep()) this.#entries.set(userId, value);
          return value;
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

  /** Forgets the user, and keeps a load under way from being cached. */
  invalidate(userId: string): void {
    this.#entries.delete(userId);
    const inflight = this.#inflight.get(userId);
    if (inflight) inflight.stale = true;
  }

  clear(): void {
    this.#entries.clear();
    for (const inflight of this.#inflight.values()) inflight.stale = true;
  }
}
