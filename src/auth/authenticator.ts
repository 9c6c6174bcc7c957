// Who is calling: the `authorization` metadata turned into a Caller (a service, a user, or nobody in open
// mode), and the start-up rule that open mode may only listen on loopback.

import { UnauthenticatedError } from "../authz/errors.ts";
import { Lru } from "../authz/lru.ts";
import { type Config, ConfigError, isLoopback, type ListenAddress } from "../config.ts";
import { CLOCK_TOLERANCE_SECONDS, createJwtVerifier, type JwtVerifierOptions } from "./jwt.ts";
import { createServiceTokens } from "./service-tokens.ts";

export type Caller = { kind: "service" } | { kind: "user"; userId: string } | { kind: "anonymous" };

export type AuthMode = "open" | "secured";

export interface Authenticator {
  /** "open" when neither service tokens nor JWTs are configured: every caller is anonymous. */
  readonly mode: AuthMode;
  /**
   * The caller behind an `authorization` header value (`Bearer <credential>`, scheme in any case), or null
   * when the header is absent. Throws UnauthenticatedError in secured mode when it is missing, malformed
   * or not verifiable. In open mode every call is anonymous, whatever it sends.
   */
  authenticate(authorization: string | null | undefined): Promise<Caller>;
  /**
   * authenticate without waiting: the caller when no JWT has to be verified (open mode, a service token),
   * undefined when one has; throws as authenticate does for a missing, malformed or unknown credential.
   */
  authenticateNow(authorization: string | null | undefined): Caller | undefined;
  /**
   * The user (lower-case sub) behind the `Bearer` access token of an HTTP request a proxy asks about: user
   * JWTs only (a service token is no user), whatever the mode. Throws UnauthenticatedError when the header
   * is missing, malformed or not verifiable, or when AUTHZ_JWT_ISSUER is not set. A verified token is
   * remembered until it expires, for at most VERIFIED_TOKEN_TTL_MS, so a user's every request through a
   * proxy does not cost a signature check.
   */
  verifyUser(authorization: string | null | undefined): Promise<string>;
  /**
   * verifyUser without waiting: the user when the token was verified before and is still taken as
   * verified, else undefined (then call verifyUser, which also says why a credential is refused).
   */
  verifyUserNow(authorization: string | null | undefined): string | undefined;
}

const ANONYMOUS: Caller = Object.freeze({ kind: "anonymous" });
const SERVICE: Caller = Object.freeze({ kind: "service" });

/** How long a verified token is taken as verified (a signing key withdrawn from the JWKS counts after this). */
export const VERIFIED_TOKEN_TTL_MS = 60_000;
const VERIFIED_TOKENS = 10_000;

/** Open mode: neither AUTHZ_SERVICE_TOKENS nor AUTHZ_JWT_ISSUER is set. */
export function authMode(config: Pick<Config, "serviceTokens" | "jwt">): AuthMode {
  return config.serviceTokens.length === 0 && config.jwt === undefined ? "open" : "secured";
}

const WHITESPACE = /\s/;
const SPACE = 0x20;

/**
 * The credential of an `authorization` header value: `Bearer` in any case, one or more spaces, then the
 * credential, which has no whitespace. Throws UnauthenticatedError when there is none. Parsed by hand: the
 * regular expression this replaces (/^bearer +(\S+)$/i) took about a microsecond per call on a 1 KB token
 * (a Cognito access token's size), out of under 20 µs for a whole /forward-auth call.
 */
function credentialOf(authorization: string | null | undefined): string {
  const header = authorization?.trim() ?? "";
  if (header === "") throw new UnauthenticatedError("missing credentials");
  let start = 6;
  if (header.charCodeAt(start) !== SPACE || header.slice(0, start).toLowerCase() !== "bearer") {
    throw new UnauthenticatedError("malformed authorization header");
  }
  while (header.charCodeAt(start) === SPACE) start++;
  const credential = header.slice(start);
  // Never empty: the header was trimmed, so something other than a space follows the spaces.
  if (WHITESPACE.test(credential)) throw new UnauthenticatedError("malformed authorization header");
  return credential;
}

/**
 * The verified-token cache's key for a credential: its last 32 characters, or all of a shorter one (a JWT's
 * signature ends it). Each entry keeps the whole credential, which a hit must equal: hashing a whole token
 * (often over 1 KB) for the lookup cost about a microsecond per call, comparing it costs a few nanoseconds.
 */
function verifiedKey(credential: string): string {
  return credential.slice(-32);
}

/** What a `Bearer` credential can hold: visible ASCII without spaces, as HTTP headers and gRPC metadata carry it. */
const SENDABLE = /^[\x21-\x7e]+$/;

/**
 * Builds the authenticator for `config`. Reads AUTHZ_JWKS_FILE now, so a bad file is a ConfigError at start.
 * A credential equal to a service token is a service; anything else is tried as a JWT when JWTs are on.
 * Throws ConfigError when a service token could not be sent as `Bearer <token>` (spaces, non-ASCII).
 */
export function createAuthenticator(
  config: Pick<Config, "serviceTokens" | "jwt">,
  jwtOptions?: JwtVerifierOptions,
): Authenticator {
  const mode = authMode(config);
  config.serviceTokens.forEach((token, index) => {
    // A token no header can carry would be configured yet never match: refuse the start instead.
    if (!SENDABLE.test(token)) {
      throw new ConfigError(
        "AUTHZ_SERVICE_TOKENS",
        `token #${index + 1} has spaces or characters outside visible ASCII, so no caller can send it`,
      );
    }
  });
  const serviceTokens = createServiceTokens(config.serviceTokens);
  const jwt = config.jwt === undefined ? undefined : createJwtVerifier(config.jwt, jwtOptions);
  const now = jwtOptions?.now ?? Date.now;
  const verified = new Lru<string, { credential: string; userId: string; until: number }>(VERIFIED_TOKENS);
  /** The user of a credential verified before and still taken as verified; undefined otherwise. */
  const remembered = (credential: string): string | undefined => {
    const known = verified.get(verifiedKey(credential));
    return known !== undefined && known.credential === credential && now() < known.until
      ? known.userId
      : undefined;
  };

  const authenticateNow = (authorization: string | null | undefined): Caller | undefined => {
    if (mode === "open") return ANONYMOUS;
    const credential = credentialOf(authorization);
    if (serviceTokens.size > 0 && serviceTokens.matches(credential)) return SERVICE;
    if (jwt === undefined) throw new UnauthenticatedError("invalid credentials");
    return undefined;
  };

  return {
    mode,
    authenticateNow,
    async authenticate(authorization) {
      const caller = authenticateNow(authorization);
      if (caller !== undefined) return caller;
      // authenticateNow leaves only JWTs undecided, so the verifier is there.
      if (jwt === undefined) throw new UnauthenticatedError("invalid credentials");
      const { userId } = await jwt.verify(credentialOf(authorization));
      return { kind: "user", userId };
    },
    verifyUserNow(authorization) {
      if (jwt === undefined || authorization == null) return undefined;
      try {
        return remembered(credentialOf(authorization));
      } catch {
        return undefined;
      }
    },
    async verifyUser(authorization) {
      const credential = credentialOf(authorization);
      if (jwt === undefined) throw new UnauthenticatedError("invalid credentials");
      const known = remembered(credential);
      if (known !== undefined) return known;
      const { userId, expiresAt } = await jwt.verify(credential);
      // Valid until exp plus the leeway the verifier allows, as a fresh verification would find.
      const until = Math.min(expiresAt + CLOCK_TOLERANCE_SECONDS * 1000, now() + VERIFIED_TOKEN_TTL_MS);
      verified.set(verifiedKey(credential), { credential, userId, until });
      return userId;
    },
  };
}

function formatListen(address: ListenAddress): string {
  return address.host.includes(":") ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

/**
 * Refuses to start open mode on a non-loopback listener unless AUTHZ_ALLOW_UNAUTHENTICATED=true: throws a
 * ConfigError naming the variables to set. Returns the warning to log when the start is open (else null).
 */
export function assertStartAllowed(
  config: Pick<Config, "serviceTokens" | "jwt" | "allowUnauthenticated" | "grpcListen" | "httpListen">,
): string | null {
  if (authMode(config) === "secured") return null;
  const exposed = [config.grpcListen, config.httpListen].filter((address) => !isLoopback(address.host));
  const first = exposed[0];
  if (first !== undefined && !config.allowUnauthenticated) {
    throw new ConfigError(
      "AUTHZ_SERVICE_TOKENS or AUTHZ_JWT_ISSUER",
      `listening on ${formatListen(first)} needs credentials (or AUTHZ_ALLOW_UNAUTHENTICATED=true)`,
    );
  }
  const where = exposed.length === 0 ? "loopback only" : `exposed on ${exposed.map(formatListen).join(", ")}`;
  return `authentication is OFF (open mode, ${where}): every call is allowed; set AUTHZ_SERVICE_TOKENS or AUTHZ_JWT_ISSUER`;
}
