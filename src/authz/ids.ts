// User, role and permission ids are UUIDs; callers may send any letter case, we always answer lower case.

import { InvalidArgumentError } from "./errors.ts";

export const NIL_UUID = "00000000-0000-0000-0000-000000000000";

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function isUuid(value: string): boolean {
  return UUID_RE.test(value);
}

/** The lower-case form of a UUID, or InvalidArgumentError naming `field`. */
export function parseUuid(value: string, field: string): string {
  if (value === "") throw new InvalidArgumentError(field, "required");
  if (!UUID_RE.test(value)) throw new InvalidArgumentError(field, "must be a UUID");
  return value.toLowerCase();
}
