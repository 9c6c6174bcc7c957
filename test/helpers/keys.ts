// Real signing keys and Cognito-shaped access tokens for tests: RSA/EC key pairs from jose, a JWKS written to
// a temp file or served by a real node:http server on 127.0.0.1, and hand-crafted hostile tokens.

import { createHmac, randomUUID } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type CryptoKey,
  exportJWK,
  exportSPKI,
  generateKeyPair,
  type JWK,
  type JWTPayload,
  SignJWT,
} from "jose";

export const ISSUER = "https://cognito-idp.eu-west-2.amazonaws.com/eu-west-2_TestPool";
export const CLIENT_ID = "4l7testclientid0000000000";

export interface TestKey {
  kid: string;
  alg: "RS256" | "ES256";
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  /** The public JWK as Cognito publishes it (kid, alg, use). */
  jwk: JWK;
}

export async function createTestKey(
  alg: "RS256" | "ES256",
  kid = `${alg.toLowerCase()}-${randomUUID()}`,
): Promise<TestKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: "sig" };
  return { kid, alg, privateKey, publicKey, jwk };
}

export function jwksOf(...keys: TestKey[]): { keys: JWK[] } {
  return { keys: keys.map((key) => key.jwk) };
}

export function tempDir(prefix = "flip-authz-test-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** Writes `content` (an object is JSON-encoded) to a new file in a temp dir; returns its path. */
export function writeTempFile(name: string, content: unknown): string {
  const path = join(tempDir(), name);
  writeFileSync(path, typeof content === "string" ? content : JSON.stringify(content));
  return path;
}

export interface TokenOptions {
  /** Claims merged over the defaults; a claim set to undefined is removed. */
  claims?: Record<string, unknown>;
  /** Header fields over { alg, kid }. */
  header?: Record<string, unknown>;
  /** Seconds from now; default 3600. null = no exp at all. */
  expiresIn?: number | null;
  /** Seconds from now for nbf; default none. */
  notBefore?: number;
}

/** A Cognito-shaped access token for `sub`, signed by `key`. */
export async function signAccessToken(
  key: TestKey,
  sub: string,
  options: TokenOptions = {},
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const claims: Record<string, unknown> = {
    sub,
    iss: ISSUER,
    client_id: CLIENT_ID,
    token_use: "access",
    scope: "aws.cognito.signin.user.admin",
    auth_time: now,
    iat: now,
    jti: randomUUID(),
    username: sub,
  };
  const expiresIn = options.expiresIn === undefined ? 3600 : options.expiresIn;
  if (expiresIn !== null) claims.exp = now + expiresIn;
  if (options.notBefore !== undefined) claims.nbf = now + options.notBefore;
  for (const [name, value] of Object.entries(options.claims ?? {})) {
    if (value === undefined) delete claims[name];
    else claims[name] = value;
  }
  return new SignJWT(claims as JWTPayload)
    .setProtectedHeader({ alg: key.alg, kid: key.kid, ...options.header })
    .sign(key.privateKey);
}

function b64url(value: unknown): string {
  return Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");
}

function defaultPayload(sub: string): Record<string, unknown> {
  const now = Math.floor(Date.now() / 1000);
  return { sub, iss: ISSUER, client_id: CLIENT_ID, token_use: "access", iat: now, exp: now + 3600 };
}

/** An unsecured token (alg none, empty signature) naming `kid`. */
export function unsecuredToken(kid: string, sub: string): string {
  return `${b64url({ alg: "none", kid })}.${b64url(defaultPayload(sub))}.`;
}

/** The classic key-confusion forgery: HS256 with the RSA public key's PEM bytes as the HMAC secret. */
export async function hs256WithPublicKey(key: TestKey, sub: string): Promise<string> {
  const input = `${b64url({ alg: "HS256", kid: key.kid, typ: "JWT" })}.${b64url(defaultPayload(sub))}`;
  const secret = await exportSPKI(key.publicKey);
  return `${input}.${createHmac("sha256", secret).update(input).digest("base64url")}`;
}

/** `token` with its payload replaced by `claims` over the original, keeping the original signature. */
export function tamperPayload(token: string, claims: Record<string, unknown>): string {
  const [header, payload, signature] = token.split(".");
  const original = JSON.parse(Buffer.from(payload ?? "", "base64url").toString("utf8")) as Record<
    string,
    unknown
  >;
  return `${header}.${b64url({ ...original, ...claims })}.${signature}`;
}

export interface JwksServer {
  url: string;
  /** Requests served so far. */
  readonly requests: number;
  /** Replaces the served key set (a key rotation). */
  setKeys(keys: { keys: JWK[] }): void;
  close(): Promise<void>;
}

/** A real HTTP server on 127.0.0.1 (port 0) serving a JWKS at /.well-known/jwks.json. */
export async function serveJwks(initial: { keys: JWK[] }): Promise<JwksServer> {
  let body = JSON.stringify(initial);
  let requests = 0;
  const server = createServer((request, response) => {
    requests += 1;
    if (request.url !== "/.well-known/jwks.json") {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { "content-type": "application/json" }).end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/.well-known/jwks.json`,
    get requests() {
      return requests;
    },
    setKeys(keys) {
      body = JSON.stringify(keys);
    },
    close() {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
