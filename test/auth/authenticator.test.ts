// From the authorization header to a Caller: service tokens (constant-time, rotation), user JWTs, both at
// once, open mode, and the start-up refusal of open mode on a non-loopback listener.

import { randomUUID } from "node:crypto";
import { beforeAll, describe, expect, it } from "vitest";
import {
  assertStartAllowed,
  authMode,
  createAuthenticator,
  VERIFIED_TOKEN_TTL_MS,
} from "../../src/auth/authenticator.ts";
import { createServiceTokens } from "../../src/auth/service-tokens.ts";
import { UnauthenticatedError } from "../../src/authz/errors.ts";
import { type Config, ConfigError, loadConfig } from "../../src/config.ts";
import {
  CLIENT_ID,
  createTestKey,
  ISSUER,
  jwksOf,
  signAccessToken,
  type TestKey,
  writeTempFile,
} from "../helpers/keys.ts";

const TOKEN_1 = "svc-token-one-0123456789abcdef";
const TOKEN_2 = "svc-token-two-fedcba9876543210";

let key: TestKey;
let jwksFile: string;

beforeAll(async () => {
  key = await createTestKey("RS256");
  jwksFile = writeTempFile("jwks.json", jwksOf(key));
});

async function refusal(promise: Promise<unknown>): Promise<string> {
  const error = await promise.then(
    () => null,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(UnauthenticatedError);
  return (error as Error).message;
}

describe("service tokens", () => {
  const tokens = createServiceTokens([TOKEN_1, TOKEN_2]);

  it("accepts every configured token (rotation)", () => {
    expect(tokens.matches(TOKEN_1)).toBe(true);
    expect(tokens.matches(TOKEN_2)).toBe(true);
  });

  it("refuses a wrong token, a prefix, an extension, a case change and empty", () => {
    for (const wrong of [
      "svc-token-three-000000000000000",
      TOKEN_1.slice(0, -1),
      TOKEN_1.slice(0, 16),
      `${TOKEN_1}x`,
      TOKEN_1.toUpperCase(),
      "",
    ]) {
      expect(tokens.matches(wrong), wrong).toBe(false);
    }
  });

  it("no tokens configured matches nothing", () => {
    expect(createServiceTokens([]).matches(TOKEN_1)).toBe(false);
  });
});

describe("createAuthenticator, service tokens only", () => {
  const auth = createAuthenticator(loadConfig({ AUTHZ_SERVICE_TOKENS: `${TOKEN_1}, ${TOKEN_2}` }));

  it("is secured", () => {
    expect(auth.mode).toBe("secured");
  });

  it("both tokens are a service, scheme in any case", async () => {
    await expect(auth.authenticate(`Bearer ${TOKEN_1}`)).resolves.toEqual({ kind: "service" });
    await expect(auth.authenticate(`bearer ${TOKEN_2}`)).resolves.toEqual({ kind: "service" });
    await expect(auth.authenticate(`BEARER ${TOKEN_2}`)).resolves.toEqual({ kind: "service" });
    await expect(auth.authenticate(`beaRer    ${TOKEN_2}`)).resolves.toEqual({ kind: "service" });
    await expect(auth.authenticate(`  Bearer ${TOKEN_1}\t `)).resolves.toEqual({ kind: "service" });
  });

  it("authenticateNow answers the same without waiting, and throws the same refusals", () => {
    expect(auth.authenticateNow(`Bearer ${TOKEN_2}`)).toEqual({ kind: "service" });
    expect(() => auth.authenticateNow(null)).toThrow("missing credentials");
    expect(() => auth.authenticateNow(`Basic ${TOKEN_1}`)).toThrow("malformed authorization header");
    expect(() => auth.authenticateNow("Bearer svc-token-three-000000000000000")).toThrow(
      "invalid credentials",
    );
  });

  it("missing credentials", async () => {
    expect(await refusal(auth.authenticate(null))).toBe("missing credentials");
    expect(await refusal(auth.authenticate(undefined))).toBe("missing credentials");
    expect(await refusal(auth.authenticate("  "))).toBe("missing credentials");
  });

  it("malformed header, without echoing it", async () => {
    for (const header of [
      TOKEN_1,
      `Basic ${TOKEN_1}`,
      "Bearer",
      "Bearer ",
      `Bearer ${TOKEN_1} extra`,
      `Token ${TOKEN_1}`,
      `Bearer\t${TOKEN_1}`,
      `Bearer${TOKEN_1}`,
      `Bearerx ${TOKEN_1}`,
      `Bear ${TOKEN_1}`,
      `Bearer ${TOKEN_1.slice(0, 10)}\u00a0${TOKEN_1.slice(10)}`,
      `Bearer ${TOKEN_1}\u2028x`,
    ]) {
      const message = await refusal(auth.authenticate(header));
      expect(message).toBe("malformed authorization header");
    }
  });

  it("a wrong token or a prefix of a right one is refused, without echoing it", async () => {
    for (const wrong of ["svc-token-three-000000000000000", TOKEN_1.slice(0, 20)]) {
      const message = await refusal(auth.authenticate(`Bearer ${wrong}`));
      expect(message).toBe("invalid credentials");
    }
  });

  it("a JWT is refused when JWTs are not configured", async () => {
    const token = await signAccessToken(key, randomUUID());
    expect(await refusal(auth.authenticate(`Bearer ${token}`))).toBe("invalid credentials");
  });
});

describe("createAuthenticator, service tokens and JWTs", () => {
  let auth: ReturnType<typeof createAuthenticator>;
  beforeAll(() => {
    auth = createAuthenticator(
      loadConfig({
        AUTHZ_SERVICE_TOKENS: TOKEN_1,
        AUTHZ_JWT_ISSUER: ISSUER,
        AUTHZ_JWT_AUDIENCE: CLIENT_ID,
        AUTHZ_JWKS_FILE: jwksFile,
      }),
    );
  });

  it("a service token is a service", async () => {
    await expect(auth.authenticate(`Bearer ${TOKEN_1}`)).resolves.toEqual({ kind: "service" });
  });

  it("a valid access token is the user, lower-case", async () => {
    const sub = randomUUID();
    const token = await signAccessToken(key, sub.toUpperCase());
    await expect(auth.authenticate(`Bearer ${token}`)).resolves.toEqual({ kind: "user", userId: sub });
    // A JWT needs verifying: authenticateNow leaves it to authenticate.
    expect(auth.authenticateNow(`Bearer ${token}`)).toBeUndefined();
    expect(auth.authenticateNow(`Bearer ${TOKEN_1}`)).toEqual({ kind: "service" });
  });

  it("anything else is tried as a JWT and refused without echoing it", async () => {
    const wrong = "svc-token-three-000000000000000";
    const message = await refusal(auth.authenticate(`Bearer ${wrong}`));
    expect(message).toMatch(/^invalid token: /);
    expect(message).not.toContain(wrong);
    const expired = await signAccessToken(key, randomUUID(), { expiresIn: -3600 });
    const expiredMessage = await refusal(auth.authenticate(`Bearer ${expired}`));
    expect(expiredMessage).toBe("invalid token: token expired");
  });

  it("a bad AUTHZ_JWKS_FILE stops the start", () => {
    expect(() =>
      createAuthenticator(
        loadConfig({ AUTHZ_JWT_ISSUER: ISSUER, AUTHZ_JWKS_FILE: writeTempFile("jwks.json", "[]") }),
      ),
    ).toThrow(/^AUTHZ_JWKS_FILE: /);
  });
});

describe("verifyUser: the user behind a proxied request's token", () => {
  const config = () =>
    loadConfig({ AUTHZ_SERVICE_TOKENS: TOKEN_1, AUTHZ_JWT_ISSUER: ISSUER, AUTHZ_JWKS_FILE: jwksFile });

  it("a valid access token is its user, lower case; a service token or garbage is no user", async () => {
    const auth = createAuthenticator(config());
    const sub = randomUUID();
    await expect(auth.verifyUser(`Bearer ${await signAccessToken(key, sub.toUpperCase())}`)).resolves.toBe(
      sub,
    );
    expect(await refusal(auth.verifyUser(`Bearer ${TOKEN_1}`))).toBe("invalid token: malformed token");
    expect(await refusal(auth.verifyUser(undefined))).toBe("missing credentials");
    expect(await refusal(auth.verifyUser("Basic dXNlcjpwYXNz"))).toBe("malformed authorization header");
  });

  it("a remembered token still stops counting at its exp plus the leeway, and is re-verified after the TTL", async () => {
    let now = Date.now();
    const auth = createAuthenticator(config(), { now: () => now });
    const sub = randomUUID();
    const token = `Bearer ${await signAccessToken(key, sub, { expiresIn: 30 })}`;
    await expect(auth.verifyUser(token)).resolves.toBe(sub);
    now += 29_000;
    await expect(auth.verifyUser(token)).resolves.toBe(sub);
    // 30 s to exp + 60 s leeway: a fresh verification refuses it now, and so does the remembered one.
    now += 62_000;
    expect(await refusal(auth.verifyUser(token))).toBe("invalid token: token expired");

    const later = `Bearer ${await signAccessToken(key, sub, { expiresIn: 3600 })}`;
    await expect(auth.verifyUser(later)).resolves.toBe(sub);
    now += VERIFIED_TOKEN_TTL_MS + 1;
    // Past the TTL the token is verified again (still valid: same answer).
    await expect(auth.verifyUser(later)).resolves.toBe(sub);
  });

  it("a credential ending as a remembered token does is verified itself, never taken for it", async () => {
    const auth = createAuthenticator(config());
    const sub = randomUUID();
    const token = await signAccessToken(key, sub);
    await expect(auth.verifyUser(`Bearer ${token}`)).resolves.toBe(sub);
    // Same last characters (the cache's key), different credential: refused, and the real one still works.
    expect(await refusal(auth.verifyUser(`Bearer x${token}`))).toMatch(/^invalid token: /);
    expect(await refusal(auth.verifyUser(`Bearer ${token.slice(1)}`))).toMatch(/^invalid token: /);
    await expect(auth.verifyUser(`Bearer ${token}`)).resolves.toBe(sub);
  });

  it("verifyUserNow knows a token only once verifyUser has verified it, and only while it counts", async () => {
    let now = Date.now();
    const auth = createAuthenticator(config(), { now: () => now });
    const sub = randomUUID();
    const token = `Bearer ${await signAccessToken(key, sub, { expiresIn: 30 })}`;
    expect(auth.verifyUserNow(token)).toBeUndefined();
    await expect(auth.verifyUser(token)).resolves.toBe(sub);
    expect(auth.verifyUserNow(token)).toBe(sub);
    // The same last characters (the cache's key) are not the same credential.
    expect(auth.verifyUserNow(`Bearer x${token.slice("Bearer ".length)}`)).toBeUndefined();
    // Missing, malformed, a service token: not known without waiting (verifyUser says why), never a throw.
    for (const header of [undefined, null, "", "Basic dXNlcjpwYXNz", `Bearer ${TOKEN_1}`, "Bearer a b"]) {
      expect(auth.verifyUserNow(header)).toBeUndefined();
    }
    // Past exp plus the leeway it no longer counts, as verifyUser then refuses it.
    now += 91_000;
    expect(auth.verifyUserNow(token)).toBeUndefined();
    expect(await refusal(auth.verifyUser(token))).toBe("invalid token: token expired");
  });

  it("without AUTHZ_JWT_ISSUER no token names a user, also in open mode", async () => {
    const auth = createAuthenticator(loadConfig({}));
    const token = await signAccessToken(key, randomUUID());
    expect(await refusal(auth.verifyUser(`Bearer ${token}`))).toBe("invalid credentials");
    expect(auth.verifyUserNow(`Bearer ${token}`)).toBeUndefined();
  });
});

describe("open mode", () => {
  it("nothing configured: every call is anonymous, whatever it sends", async () => {
    const auth = createAuthenticator(loadConfig({}));
    expect(auth.mode).toBe("open");
    await expect(auth.authenticate(null)).resolves.toEqual({ kind: "anonymous" });
    await expect(auth.authenticate("Bearer whatever")).resolves.toEqual({ kind: "anonymous" });
    await expect(auth.authenticate("garbage")).resolves.toEqual({ kind: "anonymous" });
  });

  it("authMode", () => {
    expect(authMode(loadConfig({}))).toBe("open");
    expect(authMode(loadConfig({ AUTHZ_SERVICE_TOKENS: TOKEN_1 }))).toBe("secured");
    expect(authMode(loadConfig({ AUTHZ_JWT_ISSUER: ISSUER }))).toBe("secured");
  });
});

describe("assertStartAllowed", () => {
  function startError(config: Config): ConfigError {
    try {
      assertStartAllowed(config);
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      return error as ConfigError;
    }
    throw new Error("expected the start to be refused");
  }

  it("open mode on 0.0.0.0 is refused, naming what to set", () => {
    const error = startError(loadConfig({ AUTHZ_GRPC_LISTEN: "0.0.0.0:50051" }));
    expect(error.message).toBe(
      "AUTHZ_SERVICE_TOKENS or AUTHZ_JWT_ISSUER: listening on 0.0.0.0:50051 needs credentials (or AUTHZ_ALLOW_UNAUTHENTICATED=true)",
    );
  });

  it("the HTTP listener counts too, and IPv6 any", () => {
    expect(startError(loadConfig({ AUTHZ_HTTP_LISTEN: "0.0.0.0:8080" })).message).toContain("0.0.0.0:8080");
    expect(startError(loadConfig({ AUTHZ_GRPC_LISTEN: "[::]:50051" })).message).toContain("[::]:50051");
    expect(startError(loadConfig({ AUTHZ_HTTP_LISTEN: "10.1.2.3:8080" })).message).toContain("10.1.2.3:8080");
  });

  it("open mode on loopback is allowed, with a warning to log", () => {
    for (const env of [
      {},
      { AUTHZ_GRPC_LISTEN: "127.0.0.1:0", AUTHZ_HTTP_LISTEN: "[::1]:0" },
      { AUTHZ_GRPC_LISTEN: "localhost:1" },
    ]) {
      expect(assertStartAllowed(loadConfig(env))).toMatch(/authentication is OFF.*loopback only/);
    }
  });

  it("open mode on 0.0.0.0 with AUTHZ_ALLOW_UNAUTHENTICATED=true is allowed, with a warning naming the exposure", () => {
    const warning = assertStartAllowed(
      loadConfig({ AUTHZ_GRPC_LISTEN: "0.0.0.0:50051", AUTHZ_ALLOW_UNAUTHENTICATED: "true" }),
    );
    expect(warning).toMatch(/authentication is OFF.*exposed on 0\.0\.0\.0:50051/);
  });

  it("secured mode may listen anywhere, no warning", () => {
    expect(
      assertStartAllowed(loadConfig({ AUTHZ_GRPC_LISTEN: "0.0.0.0:50051", AUTHZ_SERVICE_TOKENS: TOKEN_1 })),
    ).toBeNull();
    expect(
      assertStartAllowed(loadConfig({ AUTHZ_HTTP_LISTEN: "0.0.0.0:8080", AUTHZ_JWT_ISSUER: ISSUER })),
    ).toBeNull();
  });
});
