// What the route guard's transports share about answering (SIDECARS.md §2): the header that carries the
// user upstream and the small JSON body of a denial.

import type { Decision } from "../guard/decide.ts";

/** Set upstream on an allowed request (the user's id, or empty on a public route). */
export const USER_HEADER = "x-flip-user-id";

/**
 * `{"code": …, "message": …}` for a denial: `unauthenticated`, else `permission_denied`, or `unavailable`
 * when `undecidedStatus` is 503 (forward auth) and the decision could not be made (ext_authz answers that
 * with a 403 like any denial). The message names no secret and no internal detail.
 */
export function denialBody(decision: Decision, undecidedStatus: 403 | 503): string {
  const code =
    decision.kind === "unauthenticated"
      ? "unauthenticated"
      : decision.kind === "error" && undecidedStatus === 503
        ? "unavailable"
        : "permission_denied";
  return JSON.stringify({ code, message: decision.message });
}
