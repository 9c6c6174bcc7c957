// The JWKS URL mode against a real HTTP server on 127.0.0.1: keys fetched once and cached, an unknown kid
// refetches (rate-limited), a rotated key is picked up, and a JWKS outage fails calls, never the process.

import { randomUUID } from "node:crypto";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { createJwtVerifier, type JwtVerifierOptions } from "../../src/auth/jwt.ts";
import { UnauthenticatedError } from "../../src/authz/errors.ts";
import {
  CLIENT_ID,
  createTestKey,
  ISSUER,
  type JwksServer,
  jwksOf,
  serveJwks,
  signAccessToken,
  type TestKey,
} from "../helpers/keys.ts";

let keyA: TestKey;
let keyB: TestKey;
let keyC: TestKey;
const servers: JwksServer[] = [];

beforeAll(async () => {
  [keyA, keyB, keyC] = await Promise.all([
    createTestKey("RS256"),
    createTestKey("ES256"),
    createTestKey("RS256"),
  ]);
});

afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

async function jwksServer(...keys: TestKey[]): Promise<JwksServer> {
  const server = await serveJwks(jwksOf(...keys));
  servers.push(server);
  return server;
}

/** A hand-driven clock (ms), starting now so real tokens are valid. */
function clock(): { now: () => number; advance(ms: number): void } {
  let time = Date.now();
  return {
    now: () => time,
    advance(ms) {
      time += ms;
    },
  };
}

function verifierFor(url: string, options: JwtVerifierOptions = {}) {
  return createJwtVerifier({ issuer: ISSUER, audience: CLIENT_ID, jwksUrl: url }, options);
}

async function refusal(promise: Promise<unknown>): Promise<Error> {
  const error = await promise.then(
    () => null,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(UnauthenticatedError);
  return error as Error;
}

describe("AUTHZ_JWKS_URL", () => {
  it("fetches once and serves later calls from the cache, also concurrent first calls", async () => {
    const server = await jwksServer(keyA, keyB);
    const verifier = verifierFor(server.url);
    const subs = Array.from({ length: 10 }, () => randomUUID());
    const tokens = await Promise.all(subs.map((sub, i) => signAccessToken(i % 2 ? keyA : keyB, sub)));
    const results = await Promise.all(tokens.map((token) => verifier.verify(token)));
    expect(results.map((result) => result.userId)).toEqual(subs);
    await verifier.verify(await signAccessToken(keyA, randomUUID()));
    expect(server.requests).toBe(1);
  });

  it("an unknown kid refetches, at most once per cooldown, and picks up a rotated key", async () => {
    const server = await jwksServer(keyA);
    const time = clock();
    const verifier = verifierFor(server.url, { now: time.now });
    await verifier.verify(await signAccessToken(keyA, randomUUID()));
    expect(server.requests).toBe(1);

    // The pool rotates to key B, but we fetched a moment ago: a kid we don't know costs no fetch yet.
    server.setKeys(jwksOf(keyA, keyB));
    const rotated = await signAccessToken(keyB, randomUUID());
    for (let i = 0; i < 5; i++) {
      expect((await refusal(verifier.verify(rotated))).message).toMatch(/unknown signing key/);
    }
    expect(server.requests).toBe(1);

    time.advance(30_001);
    const sub = randomUUID();
    await expect(verifier.verify(await signAccessToken(keyB, sub))).resolves.toMatchObject({ userId: sub });
    expect(server.requests).toBe(2);

    // A made-up kid right after the refetch: refused without another request.
    await refusal(verifier.verify(await signAccessToken(keyC, randomUUID())));
    await refusal(verifier.verify(await signAccessToken(keyC, randomUUID())));
    expect(server.requests).toBe(2);
    // Known keys keep working meanwhile.
    await verifier.verify(await signAccessToken(keyA, randomUUID()));
    expect(server.requests).toBe(2);
  });

  it("a flood of unknown kids costs one fetch per cooldown (default 30 s)", async () => {
    const server = await jwksServer(keyA);
    const time = clock();
    const verifier = verifierFor(server.url, { now: time.now });
    await verifier.verify(await signAccessToken(keyA, randomUUID()));
    const bogus = await Promise.all(
      Array.from({ length: 20 }, () =>
        signAccessToken(keyC, randomUUID(), { header: { kid: randomUUID() } }),
      ),
    );
    for (let minute = 0; minute < 3; minute++) {
      await Promise.all(bogus.map((token) => refusal(verifier.verify(token))));
      time.advance(10_000);
    }
    // 30 s of flood (0 s, 10 s, 20 s) after the first fetch: no refetch; at 30 s one more.
    expect(server.requests).toBe(1);
    await Promise.all(bogus.map((token) => refusal(verifier.verify(token))));
    expect(server.requests).toBe(2);
  });

  it("server down: UNAUTHENTICATED, not a crash; retried no sooner than the failure backoff", async () => {
    const server = await jwksServer(keyA);
    const url = server.url;
    await server.close();
    const time = clock();
    const failures: Error[] = [];
    const verifier = verifierFor(url, { now: time.now, onKeyFetchError: (error) => failures.push(error) });
    const token = await signAccessToken(keyA, randomUUID());
    expect((await refusal(verifier.verify(token))).message).toMatch(/signing keys unavailable/);
    expect((await refusal(verifier.verify(token))).message).toMatch(/signing keys unavailable/);
    expect(failures).toHaveLength(1);
    time.advance(5_000);
    await refusal(verifier.verify(token));
    expect(failures).toHaveLength(2);
  });

  it("an HTTP error or a body that is not a JWKS is UNAUTHENTICATED, and retried after the backoff", async () => {
    let requests = 0;
    let status = 500;
    let body = "oops";
    const server = createServer((_request, response) => {
      requests += 1;
      response.writeHead(status, { "content-type": "application/json" }).end(body);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`;
    try {
      const time = clock();
      const verifier = verifierFor(url, { now: time.now });
      const sub = randomUUID();
      const token = await signAccessToken(keyA, sub);
      await refusal(verifier.verify(token));
      await refusal(verifier.verify(token));
      expect(requests).toBe(1);
      status = 200;
      time.advance(5_000);
      await refusal(verifier.verify(token)); // 200 but not JSON
      body = JSON.stringify({ keys: [{ kty: "oct", k: "c2VjcmV0" }] });
      time.advance(5_000);
      await refusal(verifier.verify(token)); // no usable keys
      body = JSON.stringify(jwksOf(keyA));
      time.advance(5_000);
      await expect(verifier.verify(token)).resolves.toMatchObject({ userId: sub });
      expect(requests).toBe(4);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it("stale keys stay in use when the refresh after max age fails", async () => {
    const server = await jwksServer(keyA);
    const time = clock();
    const failures: Error[] = [];
    const verifier = verifierFor(server.url, {
      now: time.now,
      onKeyFetchError: (error) => failures.push(error),
    });
    await verifier.verify(await signAccessToken(keyA, randomUUID()));
    await server.close();
    time.advance(11 * 60_000);
    const sub = randomUUID();
    // The token must be valid at the advanced clock.
    const token = await signAccessToken(keyA, sub, { expiresIn: 3600 + 11 * 60 });
    await expect(verifier.verify(token)).resolves.toMatchObject({ userId: sub });
    expect(failures).toHaveLength(1);
    // An unknown kid while the server is down fails the call, not the process.
    time.advance(30_001);
    expect((await refusal(verifier.verify(await signAccessToken(keyB, randomUUID())))).message).toMatch(
      /unknown signing key/,
    );
  });

  it("the keys are refreshed after max age, picking up rotations without an unknown kid", async () => {
    const server = await jwksServer(keyA);
    const time = clock();
    const verifier = verifierFor(server.url, { now: time.now });
    await verifier.verify(await signAccessToken(keyA, randomUUID()));
    server.setKeys(jwksOf(keyB));
    time.advance(10 * 60_000);
    const token = await signAccessToken(keyA, randomUUID(), { expiresIn: 3600 + 10 * 60 });
    expect((await refusal(verifier.verify(token))).message).toMatch(/unknown signing key/);
    expect(server.requests).toBe(2);
    // The rotated-in key is the one now trusted, without another fetch.
    const user = randomUUID();
    const rotated = await signAccessToken(keyB, user, { expiresIn: 3600 + 10 * 60 });
    expect(await verifier.verify(rotated)).toMatchObject({ userId: user });
    expect(server.requests).toBe(2);
  });
});
