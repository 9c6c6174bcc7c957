// Group commit for the store's writes on PostgreSQL. Every logged write bumps the one-row revision counter
// inside its COMMIT, so PostgreSQL commits them one at a time, a WAL flush each: that, not the service, bounds
// writes per second (the counter is what keeps revisions contiguous and in commit order). Writes that arrive
// while others are being written wait, and then go in one transaction together: one COMMIT, one flush and
// one counter bump for all of them, each with its own statements, audit row and change-log entries.
//
// This file only forms the groups: at most LANES transactions at once, each taking whatever waits (up to
// MOST writes); a write that finds a lane free starts at once, alone, so an idle service adds no latency.
// How a group is written, and what happens when one of its writes fails, is the store's (sql-store.ts).

/** A write waiting for its group: what it does inside the transaction, and where its answer goes. */
export interface QueuedWrite<C> {
  readonly operation: string;
  /** The user whose rows it writes: the group takes every member's user lock at once, sorted. */
  readonly userId: string;
  readonly run: (context: C) => Promise<object>;
  resolve(outcome: object): void;
  reject(error: unknown): void;
}

/** Writes the group it is given and settles every member; never rejects. */
export type CommitGroup<C> = (writes: QueuedWrite<C>[]) => Promise<void>;

/**
 * Transactions writing at once. Two: while one waits for its COMMIT (the counter and the flush), the other
 * runs its statements, and each takes the writes that arrived meanwhile. Measured (AssignRole, PostgreSQL,
 * 32 in flight, on 2 cores): 1 to 4 lanes and groups of at most 8 or 32 all came within the runs' own noise
 * of each other (the same setting gave 559-864 writes/s), so this stays at the simplest that overlaps.
 */
export const LANES = 2;
/** The most writes in one transaction: a bound on how long one group holds its users' locks. */
export const MOST = 32;

export class GroupCommit<C> {
  readonly #commit: CommitGroup<C>;
  readonly #lanes: number;
  readonly #most: number;
  #waiting: QueuedWrite<C>[] = [];
  #busy = 0;

  constructor(commit: CommitGroup<C>, lanes = LANES, most = MOST) {
    this.#commit = commit;
    this.#lanes = lanes;
    this.#most = most;
  }

  /** Runs `run` in a group's transaction; resolves to its outcome once the group has committed. */
  submit<T extends object>(operation: string, userId: string, run: (context: C) => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#waiting.push({ operation, userId, run, resolve: resolve as (outcome: object) => void, reject });
      this.#start();
    });
  }

  #start(): void {
    while (this.#busy < this.#lanes && this.#waiting.length > 0) {
      const group = this.#waiting.splice(0, this.#most);
      this.#busy++;
      void this.#commit(group)
        .catch((error: unknown) => {
          for (const write of group) write.reject(error);
        })
        .finally(() => {
          this.#busy--;
          this.#start();
        });
    }
  }
}
