// Service tokens (AUTHZ_SERVICE_TOKENS): shared secrets for trusted backends and sidecars. Several may be
// configured at once so a token can be rotated without downtime.

import { hash, timingSafeEqual } from "node:crypto";

export interface ServiceTokens {
  /** How many tokens are configured (0 = service tokens are off). */
  readonly size: number;
  /** True when `credential` equals one of the configured tokens. */
  matches(credential: string): boolean;
}

function digest(value: string): Buffer {
  // One-shot: no Hash object per call (half the cost of createHash on every authenticated call).
  return hash("sha256", value, "buffer");
}

/**
 * Compares in constant time: both sides are hashed to fixed-length digests first, so neither the length of
 * a token nor the position of the first differing character shows in the timing, and every configured
 * token is compared on every call (no early exit reveals which one matched).
 */
export function createServiceTokens(tokens: readonly string[]): ServiceTokens {
  const digests = tokens.map(digest);
  return {
    size: digests.length,
    matches(credential: string): boolean {
      const candidate = digest(credential);
      let matched = false;
      for (const known of digests) {
        // Non-short-circuiting OR: the loop does the same work whether or not an earlier token matched.
        matched = timingSafeEqual(candidate, known) || matched;
      }
      return matched;
    },
  };
}
