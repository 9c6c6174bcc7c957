// The one place that maps domain errors to status codes (API.md's table). Anything else passes through
// untouched to the transport, whose one rule (src/server/outcome.ts) answers INTERNAL "internal error" and
// sends the cause to the log, never to the client.

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
};

export function toConnectError(error: unknown): unknown {
  return error instanceof AuthzError ? new ConnectError(error.message, CODES[error.kind]) : error;
}
