// The TLS material also feeds @grpc/grpc-js: the credentials src/server builds from it (the one-liner in
// src/auth/tls.ts) complete a mutual-TLS handshake with a CA-signed client and refuse the others.

import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadTlsMaterial } from "../../src/auth/tls.ts";
import { createTestPki, type TestPki } from "../helpers/certs.ts";

let pki: TestPki;
let server: grpc.Server;
let port: number;

beforeAll(async () => {
  pki = createTestPki();
  const m = loadTlsMaterial({
    certFile: pki.server.cert,
    keyFile: pki.server.key,
    clientCaFile: pki.ca.cert,
  });
  const credentials = grpc.ServerCredentials.createSsl(
    m.clientCa ?? null,
    [{ private_key: m.key, cert_chain: m.cert }],
    m.clientCa !== undefined,
  );
  server = new grpc.Server();
  port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", credentials, (error, bound) => (error ? reject(error) : resolve(bound))),
  );
});

afterAll(() => {
  server.forceShutdown();
});

function connects(client?: { cert: string; key: string }): Promise<boolean> {
  const credentials = grpc.credentials.createSsl(
    pki.read(pki.ca.cert),
    client ? pki.read(client.key) : null,
    client ? pki.read(client.cert) : null,
  );
  const channel = new grpc.Client(`localhost:${port}`, credentials);
  return new Promise<boolean>((resolve) => {
    channel.waitForReady(Date.now() + 1500, (error) => {
      channel.close();
      resolve(error === undefined || error === null);
    });
  });
}

describe("gRPC mutual TLS from loadTlsMaterial", () => {
  it("a CA-signed client connects", async () => {
    expect(await connects(pki.client)).toBe(true);
  });

  it("a client without a certificate does not", async () => {
    expect(await connects()).toBe(false);
  });

  it("a self-signed client does not", async () => {
    expect(await connects(pki.selfSigned)).toBe(false);
  });
});
