// Request ids: `x-request-id` from the call's metadata or headers when it is a sane token (1–128 characters
// of letters, digits and . _ ~ : @ + = / -), else a new UUID; echoed in the response by both listeners and
// carried by every log line written while the call runs (src/logger.ts reads it from requestScope).

import { randomUUID } from "node:crypto";

export const REQUEST_ID_HEADER = "x-request-id";

const VALID = /^[A-Za-z0-9._~:@+=/-]{1,128}$/;

/** The id a caller sent, when valid; a new UUID otherwise (absent, repeated, too long, odd characters). */
export function requestIdOf(sent: unknown): string {
  return typeof sent === "string" && VALID.test(sent) ? sent : randomUUID();
}
