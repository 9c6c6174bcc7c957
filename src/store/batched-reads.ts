// Lookups by key that share statements: while `concurrency` reads are running, lookups that arrive wait, and
// then go together as one read of up to `maxBatch` keys (the same snapshot for all of them). A burst of cache
// misses costs the service and the database one round trip per batch, not one per key; a lone lookup still
// goes at once. The store reads users' roles and profiles this way (sql-store.ts).

interface Waiter<V> {
  resolve(value: V): void;
  reject(error: unknown): void;
}

export class BatchedReads<V> {
  readonly #read: (keys: string[]) => Promise<(key: string) => V>;
  readonly #concurrency: number;
  readonly #maxBatch: number;
  /** Lookups waiting for a read, by key. */
  readonly #queue = new Map<string, Waiter<V>[]>();
  #running = 0;
  #flushing = false;

  /**
   * `read` reads a batch of keys and gives back each key's answer; it is called once per lookup, so each
   * caller can be given its own copy.
   */
  constructor(read: (keys: string[]) => Promise<(key: string) => V>, concurrency: number, maxBatch: number) {
    this.#read = read;
    this.#concurrency = concurrency;
    this.#maxBatch = maxBatch;
  }

  get(key: string): Promise<V> {
    return new Promise((resolve, reject) => {
      const waiting = this.#queue.get(key);
      if (waiting) waiting.push({ resolve, reject });
      else this.#queue.set(key, [{ resolve, reject }]);
      if (this.#running < this.#concurrency && !this.#flushing) {
        this.#flushing = true;
        // After this tick, so lookups asked in the same tick share the read.
        queueMicrotask(() => {
          this.#flushing = false;
          this.#flush();
        });
      }
    });
  }

  #flush(): void {
    while (this.#queue.size > 0 && this.#running < this.#concurrency) {
      const batch = new Map<string, Waiter<V>[]>();
      for (const [key, waiters] of this.#queue) {
        batch.set(key, waiters);
        this.#queue.delete(key);
        if (batch.size >= this.#maxBatch) break;
      }
      this.#running++;
      void this.#read([...batch.keys()])
        .then(
          (answer) => {
            for (const [key, waiters] of batch) {
              for (const waiter of waiters) {
                try {
                  waiter.resolve(answer(key));
                } catch (error) {
                  waiter.reject(error);
                }
              }
            }
          },
          (error: unknown) => {
            for (const waiters of batch.values()) for (const waiter of waiters) waiter.reject(error);
          },
        )
        .finally(() => {
          this.#running--;
          this.#flush();
        });
    }
  }
}
