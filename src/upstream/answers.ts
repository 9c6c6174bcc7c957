// What an upstream sends, checked: anything that is not a flip-authz answer is a MalformedAnswerError,
// which the follower logs and treats like an upstream it cannot reach.

import { isUuid } from "../authz/ids.ts";
import { parseRevision } from "../authz/revision.ts";
import type { Revision } from "../authz/store.ts";

/** The upstream answered something that is not a flip-authz answer. */
export class MalformedAnswerError extends Error {}

/** A revision the upstream sent; anything else is a malformed answer. */
export function revisionFrom(value: string, field: string): Revision {
  let revision: Revision | undefined;
  try {
    revision = parseRevision(value, field);
  } catch {
    revision = undefined;
  }
  if (revision === undefined) {
    throw new MalformedAnswerError(`${field} ${JSON.stringify(value.slice(0, 40))} is not a revision`);
  }
  return revision;
}

export function uuidFrom(value: string, field: string): string {
  if (!isUuid(value))
    throw new MalformedAnswerError(`${field} ${JSON.stringify(value.slice(0, 40))} is not a UUID`);
  return value.toLowerCase();
}
