// TLS material: the loader's start-time checks (each naming its variable), and real handshakes against a
// node:https server built from httpsServerOptions, with and without mutual TLS.

import { writeFileSync } from "node:fs";
import { createServer, request, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { httpsServerOptions, loadTlsMaterial } from "../../src/auth/tls.ts";
import { ConfigError, loadConfig, type TlsConfig } from "../../src/config.ts";
import { createTestPki, type TestPki } from "../helpers/certs.ts";

let pki: TestPki;

beforeAll(() => {
  pki = createTestPki();
});

function loadError(tls: TlsConfig): ConfigError {
  try {
    loadTlsMaterial(tls);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).not.toContain("\n");
    return error as ConfigError;
  }
  throw new Error("expected a ConfigError");
}

function file(name: string, content: string): string {
  const path = join(pki.dir, name);
  writeFileSync(path, content);
  return path;
}

describe("loadTlsMaterial", () => {
  it("loads a matching cert and key, and a client CA", () => {
    const material = loadTlsMaterial(
      loadConfig({
        AUTHZ_TLS_CERT_FILE: pki.server.cert,
        AUTHZ_TLS_KEY_FILE: pki.server.key,
        AUTHZ_TLS_CLIENT_CA_FILE: pki.ca.cert,
      }).tls as TlsConfig,
    );
    expect(material.leaf.subject).toContain("CN=localhost");
    expect(material.leaf.subjectAltName).toContain("IP Address:127.0.0.1");
    expect(material.clientCa?.toString()).toContain("BEGIN CERTIFICATE");
    const options = httpsServerOptions(material);
    expect(options).toMatchObject({ requestCert: true, rejectUnauthorized: true });
  });

  it("without a client CA there is no client certificate request", () => {
    const options = httpsServerOptions(
      loadTlsMaterial({ certFile: pki.server.cert, keyFile: pki.server.key }),
    );
    expect(options.requestCert).toBeUndefined();
    expect(options.ca).toBeUndefined();
  });

  it("a key that does not match the certificate names AUTHZ_TLS_KEY_FILE", () => {
    const error = loadError({ certFile: pki.server.cert, keyFile: pki.client.key });
    expect(error.variable).toBe("AUTHZ_TLS_KEY_FILE");
    expect(error.message).toMatch(/does not match the certificate in AUTHZ_TLS_CERT_FILE/);
  });

  it("missing files name their variable", () => {
    expect(loadError({ certFile: "/nonexistent/cert.pem", keyFile: pki.server.key }).message).toMatch(
      /^AUTHZ_TLS_CERT_FILE: cannot read \/nonexistent\/cert.pem \(ENOENT\)$/,
    );
    expect(loadError({ certFile: pki.server.cert, keyFile: "/nonexistent/key.pem" }).variable).toBe(
      "AUTHZ_TLS_KEY_FILE",
    );
    expect(
      loadError({ certFile: pki.server.cert, keyFile: pki.server.key, clientCaFile: "/nonexistent/ca.pem" })
        .variable,
    ).toBe("AUTHZ_TLS_CLIENT_CA_FILE");
  });

  it("garbage PEM names its variable, and the key's content never appears", () => {
    const garbage = file("garbage.pem", "hello, not a certificate\n");
    expect(loadError({ certFile: garbage, keyFile: pki.server.key }).message).toMatch(
      /^AUTHZ_TLS_CERT_FILE: .* holds no PEM certificate$/,
    );
    const brokenCert = file("broken.crt", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    expect(loadError({ certFile: brokenCert, keyFile: pki.server.key }).message).toMatch(
      /^AUTHZ_TLS_CERT_FILE: .*certificate #1 is not a valid PEM certificate$/,
    );
    expect(loadError({ certFile: pki.server.cert, keyFile: garbage }).message).toMatch(
      /^AUTHZ_TLS_KEY_FILE: .* holds no PEM private key$/,
    );
    const secret = "c2VjcmV0LWtleS1tYXRlcmlhbA";
    const brokenKey = file(
      "broken.key",
      `-----BEGIN PRIVATE KEY-----\n${secret}\n-----END PRIVATE KEY-----\n`,
    );
    const keyError = loadError({ certFile: pki.server.cert, keyFile: brokenKey });
    expect(keyError.variable).toBe("AUTHZ_TLS_KEY_FILE");
    expect(keyError.message).not.toContain(secret);
    expect(
      loadError({ certFile: pki.server.cert, keyFile: pki.server.key, clientCaFile: garbage }).variable,
    ).toBe("AUTHZ_TLS_CLIENT_CA_FILE");
    // A key where the certificate belongs (and vice versa).
    expect(loadError({ certFile: pki.server.key, keyFile: pki.server.key }).variable).toBe(
      "AUTHZ_TLS_CERT_FILE",
    );
    expect(loadError({ certFile: pki.server.cert, keyFile: pki.server.cert }).variable).toBe(
      "AUTHZ_TLS_KEY_FILE",
    );
  });
});

describe("handshakes with mutual TLS", () => {
  let server: Server;
  let port: number;
  /** Handshakes the server refused, with the reason it saw. */
  const refused: string[] = [];
  let served = 0;

  beforeAll(async () => {
    const material = loadTlsMaterial({
      certFile: pki.server.cert,
      keyFile: pki.server.key,
      clientCaFile: pki.ca.cert,
    });
    server = createServer(httpsServerOptions(material), (req, res) => {
      served += 1;
      const peer = (req.socket as import("node:tls").TLSSocket).getPeerCertificate();
      res.end(`hello ${peer.subject?.CN ?? "nobody"}`);
    });
    server.on("tlsClientError", (error) => refused.push(error.message));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    port = (server.address() as AddressInfo).port;
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  function get(client?: { cert: string; key: string }, host = "127.0.0.1"): Promise<string> {
    return new Promise((resolve, reject) => {
      const req = request(
        {
          host,
          port,
          path: "/",
          ca: pki.read(pki.ca.cert),
          agent: false,
          ...(client === undefined ? {} : { cert: pki.read(client.cert), key: pki.read(client.key) }),
        },
        (res) => {
          let body = "";
          res.setEncoding("utf8");
          res.on("data", (chunk: string) => {
            body += chunk;
          });
          res.on("end", () => resolve(body));
          res.on("error", reject);
        },
      );
      req.on("error", reject);
      req.end();
    });
  }

  it("a client certificate signed by the CA is accepted (server verified by SAN 127.0.0.1 and localhost)", async () => {
    await expect(get(pki.client)).resolves.toBe("hello flip-test-client");
    await expect(get(pki.client, "localhost")).resolves.toBe("hello flip-test-client");
  });

  it("no client certificate is refused", async () => {
    const before = refused.length;
    await expect(get()).rejects.toThrow(/alert certificate required|socket hang up|ECONNRESET/);
    await waitFor(() => refused.length > before);
    expect(refused.at(-1)).toMatch(/peer did not return a certificate/);
  });

  it("a self-signed client certificate is refused before any request is served", async () => {
    const before = refused.length;
    const servedBefore = served;
    // TLS 1.3: the client may see the alert, or only the closed socket, depending on timing.
    await expect(get(pki.selfSigned)).rejects.toThrow(/alert unknown ca|socket hang up|ECONNRESET/);
    await waitFor(() => refused.length > before);
    expect(served).toBe(servedBefore);
  });
});

async function waitFor(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 100 && !condition(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
  expect(condition()).toBe(true);
}
