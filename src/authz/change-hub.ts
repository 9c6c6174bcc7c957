// One subscription to the change feed per process (the store's, or a follower's upstream stream), fanned out
// to the cached reader and to every WatchChanges stream, so a thousand watchers cost one LISTEN connection.

import type { Change, ChangeFeed, ChangeListener, ChangeSubscription, Revision } from "./store.ts";

export class ChangeHub {
  readonly #feed: ChangeFeed;
  readonly #listeners = new Set<ChangeListener>();
  #subscription: ChangeSubscription | undefined;
  #interrupted: Error | undefined;
  #degraded: string | undefined;

  constructor(feed: ChangeFeed) {
    this.#feed = feed;
  }

  /** Starts following every change committed from now on; returns the revision it starts after. */
  async start(): Promise<Revision> {
    const after = await this.#feed.currentRevision();
    this.#subscription = await this.#feed.subscribe(after, {
      onChanges: (changes: Change[]) => {
        for (const listener of this.#listeners) listener.onChanges(changes);
      },
      onInterrupted: (error: Error) => {
        this.#interrupted = error;
        for (const listener of this.#listeners) listener.onInterrupted(error);
      },
      onResumed: () => {
        this.#interrupted = undefined;
        for (const listener of this.#listeners) listener.onResumed();
      },
      onDegraded: (reason: string) => {
        this.#degraded = reason;
      },
    });
    return after;
  }

  /** Why the feed works in a lesser way (see ChangeListener.onDegraded); undefined when it does not. */
  get degraded(): string | undefined {
    return this.#degraded;
  }

  /** True while the feed is connected (and so changes arrive). */
  get connected(): boolean {
    return this.#subscription !== undefined && this.#interrupted === undefined;
  }

  addListener(listener: ChangeListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  async close(): Promise<void> {
    const subscription = this.#subscription;
    this.#subscription = undefined;
    this.#listeners.clear();
    await subscription?.close();
  }
}
