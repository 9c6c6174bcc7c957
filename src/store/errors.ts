// Turns driver errors into the domain's errors, and retries the ones that a retry can fix (serialization
// failures, deadlocks, SQLITE_BUSY). Messages never carry SQL, parameters, hosts or stack traces.

import { AbortedError, AuthzError, NotFoundError, UnavailableError } from "../authz/errors.ts";
import type { Logger } from "./logger.ts";

interface DriverLikeError {
  code?: unknown;
  message?: unknown;
  name?: unknown;
}

const CONNECTION_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EPIPE",
  "EAI_AGAIN",
  "57P01", // admin_shutdown (pg_terminate_backend)
  "57P02", // crash_shutdown
  "57P03", // cannot_connect_now (starting up)
  "53300", // too_many_connections
  "57014", // query_canceled (statement_timeout)
  "3D000", // the database does not exist (dropped, or a wrong URL)
  "28000", // invalid authorization
  "28P01", // wrong password
]);

const CONNECTION_MESSAGES = [
  "connection terminated",
  "connection refused",
  "timeout exceeded when trying to connect",
  "connection timeout",
  "client has encountered a connection error",
  "cannot use a pool after calling end",
  "client was closed",
  "unable to open database file",
  "terminating connection",
  // SQLSTATE 55000 on connect: ALTER DATABASE ... ALLOW_CONNECTIONS false, or a database being dropped.
  "is not currently accepting connections",
];

function codeOf(error: DriverLikeError): string {
  return typeof error.code === "string" ? error.code : "";
}

function messageOf(error: DriverLikeError): string {
  return typeof error.message === "string" ? error.message.toLowerCase() : "";
}

/**
 * A conflict another attempt may not hit: PostgreSQL serialization failure, deadlock or a unique violation
 * from a concurrent insert; SQLite busy/locked.
 */
export function isRetryable(error: unknown): boolean {
  if (typeof error !== "object" || error === null) return false;
  const code = codeOf(error);
  if (code === "40001" || code === "40P01") return true;
  // A row another writer (FLIP) inserted between our read and our insert: the retry sees it and updates.
  if (code === "23505") return true;
  if (code.startsWith("SQLITE_BUSY") || code.startsWith("SQLITE_LOCKED")) return true;
  return messageOf(error).includes("database is locked");
}

export function isConnectionError(error: unknown): boolean {
  if (typeof error !== "object" || error === null) return false;
  const code = codeOf(error);
  if (CONNECTION_CODES.has(code) || code.startsWith("08")) return true;
  if ((error as DriverLikeError).name === "ConnectionException") return true;
  const message = messageOf(error);
  return CONNECTION_MESSAGES.some((part) => message.includes(part));
}

export function isForeignKeyViolation(error: unknown): boolean {
  if (typeof error !== "object" || error === null) return false;
  return codeOf(error) === "23503" || messageOf(error).includes("foreign key constraint failed");
}

/** The domain error for a driver error; unknown errors become a generic Error (the cause is logged). */
export function toDomainError(error: unknown, logger: Logger, operation: string): Error {
  if (error instanceof AuthzError) return error;
  if (isConnectionError(error)) {
    logger.warn({ err: error, operation }, "database unavailable");
    return new UnavailableError("the database is unavailable");
  }
  if (isRetryable(error)) {
    logger.warn({ err: error, operation }, "write conflict persisted after retries");
    return new AbortedError("the write conflicted with a concurrent change; retry");
  }
  if (isForeignKeyViolation(error)) {
    return new NotFoundError("the role no longer exists");
  }
  logger.error({ err: error, operation }, "database error");
  return new Error("internal database error");
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Runs `fn`, retrying retryable conflicts with jittered backoff; every failure leaves as a domain error.
 * `fn` must be a whole transaction: a retry repeats it from the start.
 */
export async function withRetries<T>(
  operation: string,
  logger: Logger,
  fn: () => Promise<T>,
  attempts = 5,
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (error) {
      if (attempt < attempts && isRetryable(error) && !(error instanceof AuthzError)) {
        await sleep(Math.random() * 20 * 2 ** attempt);
        continue;
      }
      throw toDomainError(error, logger, operation);
    }
  }
}
