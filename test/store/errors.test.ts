// Driver error → domain error mapping and the retry loop, with error values shaped like pg's and
// better-sqlite3's (codes as the drivers set them).

import { expect, it } from "vitest";
import { AbortedError, NotFoundError, UnavailableError } from "../../src/authz/errors.ts";
import { toDomainError, withRetries } from "../../src/store/errors.ts";
import { silentLogger } from "../../src/store/index.ts";

function driverError(message: string, code?: string): Error {
  return Object.assign(new Error(message), code === undefined ? {} : { code });
}

it("serialization failures and deadlocks are retried, then AbortedError", async () => {
  for (const code of ["40001", "40P01", "23505", "SQLITE_BUSY"]) {
    let calls = 0;
    const error = await withRetries("test", silentLogger, async () => {
      calls++;
      throw driverError('could not serialize access due to concurrent update in "SELECT secret"', code);
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AbortedError);
    expect((error as Error).message).not.toMatch(/SELECT|secret/);
    expect(calls).toBe(5);
  }
});

it("a conflict that clears on retry returns the result", async () => {
  let calls = 0;
  const result = await withRetries("test", silentLogger, async () => {
    if (++calls < 3) throw driverError("deadlock detected", "40P01");
    return "done";
  });
  expect(result).toBe("done");
  expect(calls).toBe(3);
});

it("connection failures are Unavailable, foreign keys NotFound, the rest a generic error; none retried", async () => {
  const cases: [Error, unknown, string][] = [
    [
      driverError("connect ECONNREFUSED 10.0.0.1:5432", "ECONNREFUSED"),
      UnavailableError,
      "the database is unavailable",
    ],
    [driverError("Connection terminated unexpectedly"), UnavailableError, "the database is unavailable"],
    [
      driverError("terminating connection due to administrator command", "57P01"),
      UnavailableError,
      "the database is unavailable",
    ],
    [
      driverError('insert violates foreign key constraint "user_role_role_id_fkey"', "23503"),
      NotFoundError,
      "the role no longer exists",
    ],
    [
      driverError("FOREIGN KEY constraint failed", "SQLITE_CONSTRAINT_FOREIGNKEY"),
      NotFoundError,
      "the role no longer exists",
    ],
    [
      driverError('syntax error at or near "SELEC" in SELEC * FROM roles', "42601"),
      Error,
      "internal database error",
    ],
  ];
  for (const [input, type, message] of cases) {
    let calls = 0;
    const error = await withRetries("test", silentLogger, async () => {
      calls++;
      throw input;
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(type);
    expect((error as Error).message).toBe(message);
    expect(calls).toBe(1);
  }
  const known = new NotFoundError("role x not found");
  expect(toDomainError(known, silentLogger, "test")).toBe(known);
});
