// The JWT verifier with a real JWKS file and real RS256/ES256 keys: every rule of API.md "User JWTs", each
// hostile token refused with UNAUTHENTICATED and a reason that never repeats the token.

import { generateKeyPairSync, randomUUID } from "node:crypto";
import { beforeAll, describe, expect, it } from "vitest";
import { createJwtVerifier, type JwtVerifier, loadJwksFile } from "../../src/auth/jwt.ts";
import { UnauthenticatedError } from "../../src/authz/errors.ts";
import { ConfigError, type JwtConfig } from "../../src/config.ts";
import {
  CLIENT_ID,
  createTestKey,
  hs256WithPublicKey,
  ISSUER,
  jwksOf,
  signAccessToken,
  type TestKey,
  tamperPayload,
  unsecuredToken,
  writeTempFile,
} from "../helpers/keys.ts";

let rsa: TestKey;
let ec: TestKey;
let stranger: TestKey;
let verifier: JwtVerifier;
let config: JwtConfig;

beforeAll(async () => {
  rsa = await createTestKey("RS256");
  ec = await createTestKey("ES256");
  stranger = await createTestKey("RS256");
  config = {
    issuer: ISSUER,
    audience: CLIENT_ID,
    jwksFile: writeTempFile("jwks.json", jwksOf(rsa, ec)),
    jwksUrl: `${ISSUER}/.well-known/jwks.json`,
  };
  verifier = createJwtVerifier(config);
});

/** Asserts UNAUTHENTICATED with `reason` in the message, and that the message does not carry the token. */
async function expectRefused(token: string, reason: RegExp, using: JwtVerifier = verifier): Promise<void> {
  const error = await using.verify(token).then(
    () => null,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(UnauthenticatedError);
  const message = (error as Error).message;
  expect(message).toMatch(reason);
  if (token !== "") expect(message).not.toContain(token);
  for (const part of token.split(".")) if (part.length > 8) expect(message).not.toContain(part);
}

describe("accepted", () => {
  it("an RS256 access token gives its sub", async () => {
    const sub = randomUUID();
    await expect(verifier.verify(await signAccessToken(rsa, sub))).resolves.toMatchObject({ userId: sub });
  });

  it("an ES256 access token gives its sub", async () => {
    const sub = randomUUID();
    await expect(verifier.verify(await signAccessToken(ec, sub))).resolves.toMatchObject({ userId: sub });
  });

  it("an upper-case sub comes back lower-case", async () => {
    const sub = randomUUID();
    const token = await signAccessToken(rsa, sub.toUpperCase());
    await expect(verifier.verify(token)).resolves.toMatchObject({ userId: sub.toLowerCase() });
  });

  it("expired 30 s ago is still inside the 60 s leeway", async () => {
    const sub = randomUUID();
    await expect(verifier.verify(await signAccessToken(rsa, sub, { expiresIn: -30 }))).resolves.toMatchObject(
      {
        userId: sub,
      },
    );
  });

  it("nbf 30 s ahead is inside the leeway", async () => {
    const sub = randomUUID();
    const token = await signAccessToken(rsa, sub, { notBefore: 30 });
    await expect(verifier.verify(token)).resolves.toMatchObject({ userId: sub });
  });

  it("aud is used when client_id is absent", async () => {
    const sub = randomUUID();
    const token = await signAccessToken(rsa, sub, { claims: { client_id: undefined, aud: CLIENT_ID } });
    await expect(verifier.verify(token)).resolves.toMatchObject({ userId: sub });
    const list = await signAccessToken(rsa, sub, {
      claims: { client_id: undefined, aud: ["other", CLIENT_ID] },
    });
    await expect(verifier.verify(list)).resolves.toMatchObject({ userId: sub });
  });

  it("without token_use (not every issuer sets it)", async () => {
    const sub = randomUUID();
    const token = await signAccessToken(rsa, sub, { claims: { token_use: undefined } });
    await expect(verifier.verify(token)).resolves.toMatchObject({ userId: sub });
  });

  it("any client when no audience is configured", async () => {
    const open = createJwtVerifier({ ...config, audience: undefined } as JwtConfig);
    const sub = randomUUID();
    const token = await signAccessToken(rsa, sub, { claims: { client_id: "someone-else" } });
    await expect(open.verify(token)).resolves.toMatchObject({ userId: sub });
  });
});

describe("refused with UNAUTHENTICATED", () => {
  it("expired beyond the leeway", async () => {
    await expectRefused(await signAccessToken(rsa, randomUUID(), { expiresIn: -120 }), /expired/);
  });

  it("not yet valid beyond the leeway", async () => {
    await expectRefused(await signAccessToken(rsa, randomUUID(), { notBefore: 300 }), /not yet valid/);
  });

  it("without exp", async () => {
    await expectRefused(await signAccessToken(rsa, randomUUID(), { expiresIn: null }), /missing "exp"/);
  });

  it("a wrong issuer", async () => {
    const token = await signAccessToken(rsa, randomUUID(), {
      claims: { iss: "https://cognito-idp.eu-west-2.amazonaws.com/eu-west-2_Other" },
    });
    await expectRefused(token, /wrong issuer/);
  });

  it("without iss", async () => {
    await expectRefused(await signAccessToken(rsa, randomUUID(), { claims: { iss: undefined } }), /iss/);
  });

  it("a wrong client id", async () => {
    await expectRefused(
      await signAccessToken(rsa, randomUUID(), { claims: { client_id: "another-app" } }),
      /wrong client/,
    );
  });

  it("a wrong aud when client_id is absent, and neither claim", async () => {
    await expectRefused(
      await signAccessToken(rsa, randomUUID(), { claims: { client_id: undefined, aud: "another-app" } }),
      /wrong client/,
    );
    await expectRefused(
      await signAccessToken(rsa, randomUUID(), { claims: { client_id: undefined } }),
      /wrong client/,
    );
  });

  it("an ID token (token_use id)", async () => {
    const token = await signAccessToken(rsa, randomUUID(), {
      claims: { token_use: "id", client_id: undefined, aud: CLIENT_ID },
    });
    await expectRefused(token, /not an access token/);
  });

  it("alg none", async () => {
    await expectRefused(unsecuredToken(rsa.kid, randomUUID()), /algorithm not allowed/);
  });

  it("HS256 signed with the RSA public key", async () => {
    await expectRefused(await hs256WithPublicKey(rsa, randomUUID()), /algorithm not allowed/);
  });

  it("another asymmetric algorithm (PS256) even from a known key", async () => {
    const ps = await signAccessToken(rsa, randomUUID(), { header: { alg: "PS256" } }).catch(() => null);
    // jose refuses to sign PS256 with an RS256-bound key; a forged header is enough to test the refusal.
    const token = ps ?? tamperHeader(await signAccessToken(rsa, randomUUID()), { alg: "PS256" });
    await expectRefused(token, /algorithm not allowed/);
  });

  it("an unknown kid", async () => {
    await expectRefused(await signAccessToken(stranger, randomUUID()), /unknown signing key/);
  });

  it("a valid signature by key B under key A's kid", async () => {
    const token = await signAccessToken(stranger, randomUUID(), { header: { kid: rsa.kid } });
    await expectRefused(token, /invalid signature/);
  });

  it("an ES256 signature under an RSA kid", async () => {
    const token = await signAccessToken(ec, randomUUID(), { header: { kid: rsa.kid } });
    await expectRefused(token, /unknown signing key|invalid signature/);
  });

  it("a tampered payload", async () => {
    const token = tamperPayload(await signAccessToken(rsa, randomUUID()), { sub: randomUUID() });
    await expectRefused(token, /invalid signature/);
  });

  it("a sub that is not a UUID", async () => {
    await expectRefused(await signAccessToken(rsa, "not-a-uuid"), /sub is not a UUID/);
    await expectRefused(
      await signAccessToken(rsa, randomUUID(), { claims: { sub: undefined } }),
      /sub is not a UUID/,
    );
  });

  it("garbage and empty", async () => {
    await expectRefused("garbage", /malformed token/);
    await expectRefused("a.b.c", /malformed token/);
    await expectRefused("", /malformed token/);
  });
});

function tamperHeader(token: string, fields: Record<string, unknown>): string {
  const [header, payload, signature] = token.split(".");
  const original = JSON.parse(Buffer.from(header ?? "", "base64url").toString("utf8")) as Record<
    string,
    unknown
  >;
  return `${Buffer.from(JSON.stringify({ ...original, ...fields })).toString("base64url")}.${payload}.${signature}`;
}

describe("AUTHZ_JWKS_FILE is checked at start", () => {
  function problem(path: string): string {
    try {
      loadJwksFile(path);
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      const message = (error as Error).message;
      expect(message).toMatch(/^AUTHZ_JWKS_FILE: /);
      expect(message).not.toContain("\n");
      return message;
    }
    throw new Error("expected a ConfigError");
  }

  it("unreadable", () => {
    expect(problem("/nonexistent/jwks.json")).toMatch(/cannot read .*ENOENT/);
  });

  it("not JSON", () => {
    expect(problem(writeTempFile("jwks.json", "{not json"))).toMatch(/not JSON/);
  });

  it("no keys array", () => {
    expect(problem(writeTempFile("jwks.json", { nope: [] }))).toMatch(/no "keys" array/);
  });

  it("no usable keys: empty, symmetric, encryption-only, wrong curve, short RSA", async () => {
    expect(problem(writeTempFile("jwks.json", { keys: [] }))).toMatch(/no usable signing keys/);
    const hmac = { kty: "oct", k: "c2VjcmV0", alg: "HS256", kid: "h" };
    const enc = { ...rsa.jwk, use: "enc" };
    const p384 = (await createTestKey("ES256")).jwk;
    const wrongCurve = { ...p384, crv: "P-384" };
    const { publicKey: short } = generateKeyPairSync("rsa", { modulusLength: 1024 });
    const shortRsa = { ...short.export({ format: "jwk" }), alg: "RS256", kid: "short" };
    expect(problem(writeTempFile("jwks.json", { keys: [hmac, enc, wrongCurve, shortRsa] }))).toMatch(
      /no usable signing keys/,
    );
    // The same file with one good key: only the bad ones are dropped.
    expect(
      loadJwksFile(writeTempFile("jwks.json", { keys: [shortRsa, rsa.jwk] })).map((key) => key.kid),
    ).toEqual([rsa.kid]);
  });

  it("createJwtVerifier throws it too, so the server does not start", () => {
    expect(() => createJwtVerifier({ ...config, jwksFile: "/nonexistent/jwks.json" })).toThrow(ConfigError);
  });

  it("private members in the file are ignored: only the public key is used", async () => {
    const { exportJWK } = await import("jose");
    const withPrivate = { ...(await exportJWK(rsa.privateKey)), kid: rsa.kid, alg: "RS256" };
    const keys = loadJwksFile(writeTempFile("jwks.json", { keys: [withPrivate] }));
    expect(keys).toHaveLength(1);
    expect(keys[0]).not.toHaveProperty("d");
    const fromPrivate = createJwtVerifier({
      ...config,
      jwksFile: writeTempFile("jwks.json", { keys: [withPrivate] }),
    });
    const sub = randomUUID();
    await expect(fromPrivate.verify(await signAccessToken(rsa, sub))).resolves.toMatchObject({ userId: sub });
  });
});
