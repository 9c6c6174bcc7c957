// The one place that maps domain errors to status codes (API.md's table). Anything that is not a domain
// error is INTERNAL with a generic message; its cause goes to the log, never to the client.

import { Code, ConnectError } from "@connectrpc/connect";
import { AuthzError, type ErrorKind } from "../authz/errors.ts";

const CODES: Record<ErrorKind, Code> = {
  invalid_argument: Code.InvalidArgument,
  not_found: Code.NotFound,
  unauthenticated: Code.Unauthenticated,
  permission_denied: Code.PermissionDenied,
  failed_precondition: Code.FailedPrecondition,
  unavailable: Code.Unavailable,
  aborted: Code.Aborted,
  out_of_range: Code.OutOfRange,
};

export const INTERNAL_MESSAGE = "internal error";

export interface ErrorLogger {
  error(obj: object, msg?: string): void;
}

export function toConnectError(error: unknown, logger: ErrorLogger, method: string): ConnectError {
  if (error instanceof AuthzError) return new ConnectError(error.message, CODES[error.kind]);
  // Our own transports' errors (a cancelled call, an exceeded deadline) pass through unchanged.
  if (error instanceof ConnectError && error.code !== Code.Internal && error.code !== Code.Unknown)
    return error;
  logger.error({ err: error, method }, "unexpected error");
  return new ConnectError(INTERNAL_MESSAGE, Code.Internal);
}
