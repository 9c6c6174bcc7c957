import { describe, expect, it } from "vitest";
import { isUuid } from "../../src/authz/ids.ts";
import { uuidv7 } from "../../src/store/uuid7.ts";

describe("time-ordered audit ids (UUID version 7)", () => {
  it("are UUIDs of version 7, variant 10, carrying the millisecond", () => {
    const id = uuidv7(Date.UTC(2026, 10, 30, 12, 0, 0, 123));
    expect(isUuid(id)).toBe(true);
    expect(id[14]).toBe("7");
    expect(["8", "9", "a", "b"]).toContain(id[19]);
    expect(Number.parseInt(id.replaceAll("-", "").slice(0, 12), 16)).toBe(
      Date.UTC(2026, 10, 30, 12, 0, 0, 123),
    );
  });

  it("only grow within a process: in one millisecond, past 4096 of them, and when the clock goes back", () => {
    const at = Date.UTC(2030, 0, 1);
    const ids = [...Array.from({ length: 5000 }, () => uuidv7(at)), uuidv7(at - 10_000), uuidv7(at + 10_000)];
    expect(new Set(ids).size).toBe(ids.length);
    expect([...ids].sort()).toEqual(ids);
  });
});
