// TLS material for both listeners (AUTHZ_TLS_CERT_FILE, AUTHZ_TLS_KEY_FILE, AUTHZ_TLS_CLIENT_CA_FILE): read
// and checked once at start, so a wrong path, a non-PEM file or a key that does not match the certificate
// stops the start with a one-line ConfigError naming the variable. The transports' own objects are built
// from what this returns in src/server/security.ts.

import { createPrivateKey, type KeyObject, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import type { ServerOptions } from "node:https";
import { ConfigError, type TlsConfig } from "../config.ts";

export interface TlsMaterial {
  /** PEM private key. */
  key: Buffer;
  /** PEM certificate chain, leaf first. */
  cert: Buffer;
  /** PEM CA bundle for client certificates; set = mutual TLS (clients must present a cert it signed). */
  clientCa?: Buffer;
  /** The leaf certificate, for the start-up log (subject, validTo). */
  leaf: X509Certificate;
}

const CERT_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** The file at `path`, or a ConfigError naming `variable`. */
export function readTlsFile(path: string, variable: string): Buffer {
  try {
    return readFileSync(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? "unreadable";
    throw new ConfigError(variable, `cannot read ${path} (${code})`);
  }
}

/** The PEM certificates in `pem` (at least one), or a ConfigError naming `variable`. */
export function parseCertificates(pem: Buffer, path: string, variable: string): X509Certificate[] {
  const blocks = pem.toString("utf8").match(CERT_BLOCK) ?? [];
  if (blocks.length === 0) throw new ConfigError(variable, `${path} holds no PEM certificate`);
  return blocks.map((block, index) => {
    try {
      return new X509Certificate(block);
    } catch {
      throw new ConfigError(variable, `${path}: certificate #${index + 1} is not a valid PEM certificate`);
    }
  });
}

/** The PEM private key in `pem`, or a ConfigError naming `variable` (never echoing the key). */
export function parsePrivateKey(pem: Buffer, path: string, variable: string): KeyObject {
  if (!pem.toString("utf8").includes("PRIVATE KEY-----")) {
    throw new ConfigError(variable, `${path} holds no PEM private key`);
  }
  try {
    return createPrivateKey({ key: pem, format: "pem" });
  } catch {
    // Never echo the key or the parser's detail; encrypted keys land here too.
    throw new ConfigError(
      variable,
      `${path} is not a usable PEM private key (unencrypted PKCS#8, PKCS#1 or SEC1)`,
    );
  }
}

/** Reads and validates the files of `tls`; throws ConfigError naming the offending variable. */
export function loadTlsMaterial(tls: TlsConfig): TlsMaterial {
  const cert = readTlsFile(tls.certFile, "AUTHZ_TLS_CERT_FILE");
  const key = readTlsFile(tls.keyFile, "AUTHZ_TLS_KEY_FILE");
  const [leaf] = parseCertificates(cert, tls.certFile, "AUTHZ_TLS_CERT_FILE");
  if (leaf === undefined)
    throw new ConfigError("AUTHZ_TLS_CERT_FILE", `${tls.certFile} holds no PEM certificate`);
  const keyObject = parsePrivateKey(key, tls.keyFile, "AUTHZ_TLS_KEY_FILE");
  if (!leaf.checkPrivateKey(keyObject)) {
    throw new ConfigError(
      "AUTHZ_TLS_KEY_FILE",
      `${tls.keyFile} does not match the certificate in AUTHZ_TLS_CERT_FILE`,
    );
  }
  const material: TlsMaterial = { key, cert, leaf };
  if (tls.clientCaFile !== undefined) {
    const clientCa = readTlsFile(tls.clientCaFile, "AUTHZ_TLS_CLIENT_CA_FILE");
    parseCertificates(clientCa, tls.clientCaFile, "AUTHZ_TLS_CLIENT_CA_FILE");
    material.clientCa = clientCa;
  }
  return material;
}

/** Options for https.createServer / http2.createSecureServer: mutual TLS when a client CA is configured. */
export function httpsServerOptions(material: TlsMaterial): ServerOptions {
  const options: ServerOptions = { key: material.key, cert: material.cert, minVersion: "TLSv1.2" };
  if (material.clientCa !== undefined) {
    options.ca = material.clientCa;
    options.requestCert = true;
    options.rejectUnauthorized = true;
  }
  return options;
}
