// User JWTs: Cognito access tokens verified against the user pool's signing keys (a JWKS file read once at
// start, or the JWKS URL fetched, cached and refetched on an unknown `kid`). Every failure is an
// UnauthenticatedError with a short reason that never repeats the token.

import { createPublicKey, type JsonWebKey as NodeJsonWebKey } from "node:crypto";
import { readFileSync } from "node:fs";
import {
  type CompactJWSHeaderParameters,
  type CryptoKey,
  createLocalJWKSet,
  errors,
  type FlattenedJWSInput,
  type JWK,
  type JWTPayload,
  type JWTVerifyGetKey,
  jwtVerify,
} from "jose";
import { UnauthenticatedError } from "../authz/errors.ts";
import { isUuid } from "../authz/ids.ts";
import { ConfigError, type JwtConfig } from "../config.ts";

/** The only signature algorithms Cognito uses; everything else (none, HS*, PS*, EdDSA) is refused. */
export const JWT_ALGORITHMS = ["RS256", "ES256"] as const;

/** exp/nbf leeway for clocks that disagree a little. */
export const CLOCK_TOLERANCE_SECONDS = 60;

export interface VerifiedUser {
  /** The token's `sub`, lower-case. */
  userId: string;
  /** The token's `exp`, in ms since the epoch. */
  expiresAt: number;
}

export interface JwtVerifier {
  /** Verifies a compact JWS; throws UnauthenticatedError with a short reason. */
  verify(token: string): Promise<VerifiedUser>;
}

export interface JwtVerifierOptions {
  /** Minimum time between two fetches caused by an unknown `kid` (default 30 s): a flood of made-up kids costs one fetch. */
  refetchCooldownMs?: number;
  /** Keys older than this are refreshed before use (default 10 min); if that fails the old keys stay in use. */
  maxAgeMs?: number;
  /** After a failed fetch, the next attempt waits at least this long (default 5 s). */
  retryAfterFailureMs?: number;
  /** Timeout of one JWKS fetch (default 5 s). */
  fetchTimeoutMs?: number;
  /** Told about failed JWKS fetches (for the log); the call itself just fails UNAUTHENTICATED. */
  onKeyFetchError?: (error: Error) => void;
  /** Clock in ms, for tests; also the time exp/nbf are checked against. */
  now?: () => number;
  /** fetch implementation, for tests. */
  fetch?: typeof fetch;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * The usable public signing keys of a JWKS document, reduced to their public members: RSA keys (2048 bits
 * or more) for RS256 and P-256 keys for ES256, with `use` absent or `sig`. Throws Error saying what is wrong.
 */
export function usableSigningKeys(document: unknown): JWK[] {
  if (!isObject(document) || !Array.isArray(document.keys)) {
    throw new Error('not a JSON Web Key Set (no "keys" array)');
  }
  const keys: JWK[] = [];
  for (const entry of document.keys) {
    if (!isObject(entry)) continue;
    if (entry.use !== undefined && entry.use !== "sig") continue;
    let jwk: JWK;
    if (entry.kty === "RSA" && (entry.alg === undefined || entry.alg === "RS256")) {
      if (typeof entry.n !== "string" || typeof entry.e !== "string") continue;
      jwk = { kty: "RSA", n: entry.n, e: entry.e, alg: "RS256" };
    } else if (
      entry.kty === "EC" &&
      entry.crv === "P-256" &&
      (entry.alg === undefined || entry.alg === "ES256")
    ) {
      if (typeof entry.x !== "string" || typeof entry.y !== "string") continue;
      jwk = { kty: "EC", crv: "P-256", x: entry.x, y: entry.y, alg: "ES256" };
    } else {
      continue;
    }
    if (typeof entry.kid === "string") jwk.kid = entry.kid;
    try {
      const key = createPublicKey({ key: jwk as NodeJsonWebKey, format: "jwk" });
      const bits = key.asymmetricKeyDetails?.modulusLength;
      if (jwk.kty === "RSA" && (bits === undefined || bits < 2048)) continue;
    } catch {
      continue;
    }
    keys.push(jwk);
  }
  if (keys.length === 0) throw new Error("no usable signing keys (RSA for RS256 or P-256 for ES256)");
  return keys;
}

/** Reads and validates `AUTHZ_JWKS_FILE`; a problem is a ConfigError naming the variable. */
export function loadJwksFile(path: string, variable = "AUTHZ_JWKS_FILE"): JWK[] {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? "unreadable";
    throw new ConfigError(variable, `cannot read ${path} (${code})`);
  }
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch {
    throw new ConfigError(variable, `${path} is not JSON`);
  }
  try {
    return usableSigningKeys(document);
  } catch (error) {
    throw new ConfigError(variable, `${path}: ${(error as Error).message}`);
  }
}

type KeySet = ReturnType<typeof createLocalJWKSet>;

/**
 * The JWKS URL behind a cache. At most one fetch is in flight; an unknown `kid` refetches at most once per
 * cooldown, and a failed fetch is retried no sooner than `retryAfterFailureMs`, so bad tokens cannot make
 * this service hammer the identity provider. A fetch failure fails only the calls that needed new keys.
 */
function createRemoteKeys(url: string, options: JwtVerifierOptions, now: () => number): JWTVerifyGetKey {
  const cooldownMs = options.refetchCooldownMs ?? 30_000;
  const maxAgeMs = options.maxAgeMs ?? 600_000;
  const retryAfterFailureMs = options.retryAfterFailureMs ?? 5_000;
  const timeoutMs = options.fetchTimeoutMs ?? 5_000;
  const fetchImpl = options.fetch ?? fetch;

  let keys: KeySet | undefined;
  let fetchedAt = Number.NEGATIVE_INFINITY;
  let lastAttempt = Number.NEGATIVE_INFINITY;
  let lastFailed = false;
  let pending: Promise<KeySet> | undefined;

  const mayFetch = (): boolean =>
    pending !== undefined || now() - lastAttempt >= (lastFailed ? retryAfterFailureMs : cooldownMs);

  async function fetchKeys(): Promise<KeySet> {
    lastAttempt = now();
    try {
      const response = await fetchImpl(url, {
        headers: { accept: "application/json, application/jwk-set+json" },
        redirect: "error",
        signal: AbortSignal.timeout(timeoutMs),
      });
      if (response.status !== 200) {
        await response.body?.cancel();
        throw new Error(`JWKS fetch from ${url} answered HTTP ${response.status}`);
      }
      let document: unknown;
      try {
        document = await response.json();
      } catch {
        throw new Error(`JWKS from ${url} is not JSON`);
      }
      const fresh = createLocalJWKSet({ keys: usableSigningKeys(document) });
      keys = fresh;
      fetchedAt = now();
      lastFailed = false;
      return fresh;
    } catch (error) {
      lastFailed = true;
      const failure = error instanceof Error ? error : new Error(String(error));
      options.onKeyFetchError?.(failure);
      throw failure;
    }
  }

  function refresh(): Promise<KeySet> {
    pending ??= fetchKeys().finally(() => {
      pending = undefined;
    });
    return pending;
  }

  return async (header: CompactJWSHeaderParameters, token: FlattenedJWSInput): Promise<CryptoKey> => {
    let current = keys;
    let refreshed = false;
    if (current === undefined || now() - fetchedAt >= maxAgeMs) {
      if (mayFetch()) {
        try {
          current = await refresh();
          refreshed = true;
        } catch {
          // Stale keys beat no keys: a JWKS outage must not lock out every caller.
        }
      }
      if (current === undefined) throw new UnauthenticatedError("invalid token: signing keys unavailable");
    }
    try {
      return await current(header, token);
    } catch (error) {
      if (!(error instanceof errors.JWKSNoMatchingKey) || refreshed || !mayFetch()) throw error;
    }
    // An unknown kid: the pool may have rotated its keys since the last fetch.
    try {
      current = await refresh();
    } catch {
      throw new UnauthenticatedError("invalid token: unknown signing key (key refresh failed)");
    }
    return current(header, token);
  };
}

/** A short, token-free reason for a jose failure. */
function reason(error: unknown): string {
  if (error instanceof errors.JWTExpired) return "token expired";
  if (error instanceof errors.JWTClaimValidationFailed) {
    if (error.claim === "nbf") return "token not yet valid";
    if (error.claim === "iss") return "wrong issuer";
    return error.reason === "missing" ? `missing "${error.claim}" claim` : `invalid "${error.claim}" claim`;
  }
  if (error instanceof errors.JOSEAlgNotAllowed || error instanceof errors.JOSENotSupported) {
    return "algorithm not allowed (RS256 or ES256 only)";
  }
  if (error instanceof errors.JWSSignatureVerificationFailed) return "invalid signature";
  if (error instanceof errors.JWKSNoMatchingKey) return "unknown signing key";
  if (error instanceof errors.JWKSMultipleMatchingKeys) return "no kid and several signing keys";
  if (error instanceof errors.JWSInvalid || error instanceof errors.JWTInvalid) return "malformed token";
  return "token not verifiable";
}

function audienceMatches(payload: JWTPayload, audience: string): boolean {
  // Cognito access tokens carry the app client in client_id and have no aud; other issuers use aud.
  if (payload.client_id !== undefined) return payload.client_id === audience;
  if (typeof payload.aud === "string") return payload.aud === audience;
  if (Array.isArray(payload.aud)) return payload.aud.includes(audience);
  return false;
}

/**
 * A verifier for `config`: RS256/ES256 only, `iss` equal to the issuer, `exp` required, exp/nbf with 60 s
 * leeway, `token_use` (when present) `access`, `client_id` (else `aud`) equal to the audience when one is
 * configured, `sub` a UUID. A JWKS file is read here, so a bad file stops the start (ConfigError).
 */
export function createJwtVerifier(config: JwtConfig, options: JwtVerifierOptions = {}): JwtVerifier {
  const now = options.now ?? Date.now;
  const getKey: JWTVerifyGetKey =
    config.jwksFile !== undefined
      ? createLocalJWKSet({ keys: loadJwksFile(config.jwksFile) })
      : createRemoteKeys(config.jwksUrl, options, now);

  return {
    async verify(token: string): Promise<VerifiedUser> {
      let payload: JWTPayload;
      try {
        ({ payload } = await jwtVerify(token, getKey, {
          algorithms: [...JWT_ALGORITHMS],
          issuer: config.issuer,
          clockTolerance: CLOCK_TOLERANCE_SECONDS,
          requiredClaims: ["exp"],
          currentDate: new Date(now()),
        }));
      } catch (error) {
        if (error instanceof UnauthenticatedError) throw error;
        throw new UnauthenticatedError(`invalid token: ${reason(error)}`);
      }
      if (payload.token_use !== undefined && payload.token_use !== "access") {
        throw new UnauthenticatedError("invalid token: not an access token");
      }
      if (config.audience !== undefined && !audienceMatches(payload, config.audience)) {
        throw new UnauthenticatedError("invalid token: wrong client");
      }
      if (typeof payload.sub !== "string" || !isUuid(payload.sub)) {
        throw new UnauthenticatedError("invalid token: sub is not a UUID");
      }
      // jose has checked that exp is a number (requiredClaims).
      return { userId: payload.sub.toLowerCase(), expiresAt: (payload.exp as number) * 1000 };
    },
  };
}
