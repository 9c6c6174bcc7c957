// Typed domain errors. The domain and the store throw these; src/rpc/errors.ts is the one place that maps
// them to status codes, and anything else becomes INTERNAL with a generic message.

export type ErrorKind =
  | "invalid_argument"
  | "not_found"
  | "unauthenticated"
  | "permission_denied"
  | "failed_precondition"
  | "unavailable"
  | "aborted";

export abstract class AuthzError extends Error {
  abstract readonly kind: ErrorKind;
}

/** Bad input. `field` is the request path of the offending field (`checks[3].permission`). */
export class InvalidArgumentError extends AuthzError {
  readonly kind = "invalid_argument";
  readonly field: string;
  constructor(field: string, problem: string) {
    super(`${field}: ${problem}`);
    this.field = field;
  }
}

/** An unknown role or permission reference, or a user nobody knows. */
export class NotFoundError extends AuthzError {
  readonly kind = "not_found";
}

export class UnauthenticatedError extends AuthzError {
  readonly kind = "unauthenticated";
}

export class PermissionDeniedError extends AuthzError {
  readonly kind = "permission_denied";
}

/** The call would break an invariant (no user left holding Admin). */
export class FailedPreconditionError extends AuthzError {
  readonly kind = "failed_precondition";
}

/** The database cannot be reached; the caller may retry. */
export class UnavailableError extends AuthzError {
  readonly kind = "unavailable";
}

/** A write conflict that persisted after the store's own retries. */
export class AbortedError extends AuthzError {
  readonly kind = "aborted";
}
