// The LRU against a plain model of itself (an array in recency order), over long random sequences of
// get/set/delete/clear, and at the sizes the user cache runs at.

import { describe, expect, it } from "vitest";
import { Lru } from "../../src/authz/lru.ts";

/** The obviously right LRU: keys in recency order, most recent last. */
class Model {
  readonly entries: [string, number][] = [];
  readonly capacity: number;
  constructor(capacity: number) {
    this.capacity = capacity;
  }
  get(key: string): number | undefined {
    const i = this.entries.findIndex(([k]) => k === key);
    if (i < 0) return undefined;
    const [entry] = this.entries.splice(i, 1);
    if (!entry) return undefined;
    this.entries.push(entry);
    return entry[1];
  }
  set(key: string, value: number): void {
    if (this.capacity <= 0) return;
    this.delete(key);
    this.entries.push([key, value]);
    if (this.entries.length > this.capacity) this.entries.shift();
  }
  delete(key: string): void {
    const i = this.entries.findIndex(([k]) => k === key);
    if (i >= 0) this.entries.splice(i, 1);
  }
}

/** A small deterministic generator, so a failure replays. */
function random(seed: number): () => number {
  let state = seed;
  return () => {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    return state / 2 ** 32;
  };
}

describe("Lru", () => {
  it.each([1, 2, 3, 7, 50])(
    "agrees with the model over 20,000 random operations (capacity %i)",
    (capacity) => {
      const next = random(capacity);
      const lru = new Lru<string, number>(capacity);
      const model = new Model(capacity);
      for (let step = 0; step < 20_000; step++) {
        const key = `k${Math.floor(next() * capacity * 3)}`;
        const op = next();
        if (op < 0.45) expect(lru.get(key)).toBe(model.get(key));
        else if (op < 0.9) {
          lru.set(key, step);
          model.set(key, step);
        } else if (op < 0.999) {
          lru.delete(key);
          model.delete(key);
        } else {
          lru.clear();
          model.entries.length = 0;
        }
        expect(lru.size).toBe(model.entries.length);
      }
      // The survivors and their values match; then filling up evicts in the model's order.
      for (const [key, value] of [...model.entries]) expect(lru.get(key)).toBe(value);
      for (let i = 0; i < capacity; i++) {
        lru.set(`fresh${i}`, -i);
        model.set(`fresh${i}`, -i);
        // Touching every survivor oldest first leaves the recency order as it was.
        for (const [key, value] of model.entries) expect(lru.get(key)).toBe(value);
        expect(lru.size).toBe(model.entries.length);
      }
    },
  );

  it("holds 100,000 keys, evicts the least recently used, and a hit keeps a key", () => {
    const lru = new Lru<string, number>(100_000);
    for (let i = 0; i < 100_000; i++) lru.set(`u${i}`, i);
    expect(lru.size).toBe(100_000);
    expect(lru.get("u0")).toBe(0); // now the most recent
    lru.set("new", -1); // evicts u1, the least recent
    expect(lru.get("u1")).toBeUndefined();
    expect(lru.get("u0")).toBe(0);
    expect(lru.get("u2")).toBe(2);
    expect(lru.size).toBe(100_000);
  });

  it("reuses the slot of a deleted key without evicting anyone", () => {
    const lru = new Lru<string, number>(3);
    lru.set("a", 1);
    lru.set("b", 2);
    lru.set("c", 3);
    lru.delete("b");
    lru.set("d", 4);
    expect([lru.get("a"), lru.get("b"), lru.get("c"), lru.get("d")]).toEqual([1, undefined, 3, 4]);
    lru.set("e", 5); // a is the least recently used now
    expect(lru.get("a")).toBeUndefined();
    expect(lru.size).toBe(3);
  });
});
