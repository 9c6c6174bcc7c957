// BatchedReads (src/store/batched-reads.ts): lookups that arrive while reads run share the next read, a
// batch never exceeds its size, and a failed read fails its own lookups only.

import { describe, expect, it } from "vitest";
import { BatchedReads } from "../../src/store/batched-reads.ts";

/** A read that records the keys of each call and answers `<key>!` once `release` is called. */
function recordingRead() {
  const calls: string[][] = [];
  const pending: (() => void)[] = [];
  const read = (keys: string[]) => {
    calls.push(keys);
    return new Promise<(key: string) => string>((resolve) => {
      pending.push(() => resolve((key) => `${key}!`));
    });
  };
  const release = () => {
    for (const done of pending.splice(0)) done();
  };
  return { calls, read, release };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe("batched reads", () => {
  it("sends the lookups of one tick as one read, and those that arrive during it as the next", async () => {
    const { calls, read, release } = recordingRead();
    const reads = new BatchedReads(read, 1, 100);
    const first = ["a", "b", "a"].map((key) => reads.get(key));
    await tick();
    expect(calls).toEqual([["a", "b"]]);
    const second = ["c", "d"].map((key) => reads.get(key));
    await tick();
    // One read at a time: c and d wait for a and b's.
    expect(calls).toHaveLength(1);
    release();
    expect(await Promise.all(first)).toEqual(["a!", "b!", "a!"]);
    await tick();
    expect(calls).toEqual([
      ["a", "b"],
      ["c", "d"],
    ]);
    release();
    expect(await Promise.all(second)).toEqual(["c!", "d!"]);
  });

  it("splits a queue longer than a batch, and runs up to `concurrency` reads at once", async () => {
    const { calls, read, release } = recordingRead();
    const reads = new BatchedReads(read, 2, 3);
    const all = ["a", "b", "c", "d", "e", "f", "g"].map((key) => reads.get(key));
    await tick();
    expect(calls).toEqual([
      ["a", "b", "c"],
      ["d", "e", "f"],
    ]);
    release();
    await tick();
    expect(calls.at(-1)).toEqual(["g"]);
    release();
    expect(await Promise.all(all)).toEqual(["a!", "b!", "c!", "d!", "e!", "f!", "g!"]);
  });

  it("rejects the lookups of a failed read with its error, and goes on with the next", async () => {
    let fail = true;
    const reads = new BatchedReads(
      async (keys) => {
        if (fail) throw new Error(`no ${keys.join(",")}`);
        return (key) => key.toUpperCase();
      },
      1,
      10,
    );
    const failed = Promise.allSettled(["a", "b"].map((key) => reads.get(key)));
    const results = await failed;
    expect(results.map((r) => r.status === "rejected" && (r.reason as Error).message)).toEqual([
      "no a,b",
      "no a,b",
    ]);
    fail = false;
    expect(await reads.get("c")).toBe("C");
  });

  it("rejects only the lookup whose answer could not be made", async () => {
    const reads = new BatchedReads(
      async () => (key: string) => {
        if (key === "bad") throw new Error("cannot answer bad");
        return key;
      },
      1,
      10,
    );
    const results = await Promise.allSettled(["good", "bad"].map((key) => reads.get(key)));
    expect(results[0]).toEqual({ status: "fulfilled", value: "good" });
    expect(results[1]).toMatchObject({ status: "rejected", reason: new Error("cannot answer bad") });
  });
});
