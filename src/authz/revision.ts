// Revisions travel as opaque strings (API.md); inside they are change-log positions. Only this module knows
// the encoding, so it can change without touching callers.

import { InvalidArgumentError } from "./errors.ts";
import type { Revision } from "./store.ts";

export function formatRevision(revision: Revision): string {
  return String(revision);
}

/** Parses a revision a client sent back; empty → undefined; anything else not ours → InvalidArgumentError. */
export function parseRevision(value: string, field: string): Revision | undefined {
  if (value === "") return undefined;
  if (!/^\d{1,15}$/.test(value)) {
    throw new InvalidArgumentError(
      field,
      "must be a revision (from written_at, read_at, checked_at or WatchChanges)",
    );
  }
  return Number(value);
}
