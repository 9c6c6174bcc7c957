// A throwaway PKI made with the openssl CLI for TLS tests: a CA, a server certificate for 127.0.0.1 and
// localhost, a client certificate signed by the CA, and a self-signed client certificate the CA never saw.
// All EC P-256 (fast), valid for two days, in a fresh temp dir. Reusable for end-to-end TLS tests.

import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface CertFiles {
  /** Path of the PEM certificate. */
  cert: string;
  /** Path of the PEM private key (PKCS#8, unencrypted). */
  key: string;
}

export interface TestPki {
  dir: string;
  ca: CertFiles;
  /** serverAuth, SAN IP:127.0.0.1 and DNS:localhost, signed by `ca`. */
  server: CertFiles;
  /**
   * serverAuth and clientAuth, SAN as `server`, signed by `ca`: a server certificate that may also act as
   * a client, which `flip-authz healthcheck` needs under mutual TLS.
   */
  peer: CertFiles;
  /** clientAuth, CN flip-test-client, signed by `ca`. */
  client: CertFiles;
  /** clientAuth, self-signed: a client `ca` does not vouch for. */
  selfSigned: CertFiles;
  /** Reads one of the files above. */
  read(path: string): Buffer;
}

const EXTENSIONS = {
  ca: [
    "basicConstraints=critical,CA:TRUE",
    "keyUsage=critical,keyCertSign,cRLSign",
    "subjectKeyIdentifier=hash",
  ],
  server: [
    "basicConstraints=critical,CA:FALSE",
    "keyUsage=critical,digitalSignature",
    "extendedKeyUsage=serverAuth",
    "subjectAltName=IP:127.0.0.1,DNS:localhost",
  ],
  peer: [
    "basicConstraints=critical,CA:FALSE",
    "keyUsage=critical,digitalSignature",
    "extendedKeyUsage=serverAuth,clientAuth",
    "subjectAltName=IP:127.0.0.1,DNS:localhost",
  ],
  client: [
    "basicConstraints=critical,CA:FALSE",
    "keyUsage=critical,digitalSignature",
    "extendedKeyUsage=clientAuth",
  ],
};

function openssl(args: string[]): void {
  execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"] });
}

function makeCert(
  dir: string,
  name: string,
  subject: string,
  extensions: string[],
  issuer: CertFiles | "self",
): CertFiles {
  const files = { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
  const csr = join(dir, `${name}.csr`);
  const ext = join(dir, `${name}.ext`);
  writeFileSync(ext, `${extensions.join("\n")}\n`);
  openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", files.key]);
  openssl(["req", "-new", "-key", files.key, "-subj", subject, "-out", csr]);
  const signing = issuer === "self" ? ["-signkey", files.key] : ["-CA", issuer.cert, "-CAkey", issuer.key];
  openssl([
    "x509",
    "-req",
    "-in",
    csr,
    ...signing,
    "-set_serial",
    `0x${randomBytes(8).toString("hex")}`,
    "-days",
    "2",
    "-sha256",
    "-extfile",
    ext,
    "-out",
    files.cert,
  ]);
  return files;
}

/** Creates the whole PKI in a new temp dir (or `dir`). Takes well under a second. */
export function createTestPki(dir = mkdtempSync(join(tmpdir(), "flip-authz-pki-"))): TestPki {
  const ca = makeCert(dir, "ca", "/CN=flip-authz test CA", EXTENSIONS.ca, "self");
  const server = makeCert(dir, "server", "/CN=localhost", EXTENSIONS.server, ca);
  const peer = makeCert(dir, "peer", "/CN=localhost", EXTENSIONS.peer, ca);
  const client = makeCert(dir, "client", "/CN=flip-test-client", EXTENSIONS.client, ca);
  const selfSigned = makeCert(dir, "self-signed", "/CN=flip-test-intruder", EXTENSIONS.client, "self");
  return { dir, ca, server, peer, client, selfSigned, read: (path) => readFileSync(path) };
}
