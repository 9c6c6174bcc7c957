// Transport security for both listeners from AUTHZ_TLS_*: grpc-js credentials and node:https options
// built from the same checked PEM material (src/auth/tls.ts); h2c and plain HTTP when TLS is off.

import type { ServerOptions as HttpsOptions } from "node:https";
import * as grpc from "@grpc/grpc-js";
import { httpsServerOptions, loadTlsMaterial } from "../auth/tls.ts";
import type { TlsConfig } from "../config.ts";

export interface TransportSecurity {
  grpc: grpc.ServerCredentials;
  /** Set when the HTTP listener must speak TLS. */
  https?: HttpsOptions;
  /** The serving certificate (the leaf), for the start-up log. */
  certificate?: { subject: string; validFrom: Date; validTo: Date };
}

export function createTransportSecurity(tls: TlsConfig | undefined): TransportSecurity {
  if (!tls) return { grpc: grpc.ServerCredentials.createInsecure() };
  const material = loadTlsMaterial(tls);
  return {
    grpc: grpc.ServerCredentials.createSsl(
      material.clientCa ?? null,
      [{ private_key: material.key, cert_chain: material.cert }],
      material.clientCa !== undefined,
    ),
    https: httpsServerOptions(material),
    certificate: {
      subject: material.leaf.subject.replace(/\n/g, ", "),
      validFrom: material.leaf.validFromDate,
      validTo: material.leaf.validToDate,
    },
  };
}
