// What the HTTP listener accepts from browsers. A web page can reach a loopback listener through DNS
// rebinding (its own name made to resolve to 127.0.0.1), as a same-origin request with no preflight; it
// cannot choose the Host header, which carries that name. So: a Host check (only names this service
// answers to), an Origin check on calls that change state, and CORS only for origins listed on purpose.
// Pure: the listener feeds it header values and the connection's local address.

import { isIP } from "node:net";

export interface BrowserPolicyOptions {
  /** Refuse requests whose Host is not an allowed name (always in open mode; else when names are listed). */
  checkHost: boolean;
  /** AUTHZ_ALLOWED_HOSTS, as parseHostPattern gives them: `name`, `name:port`, `*.suffix[:port]`, `[v6]`. */
  allowedHosts: readonly string[];
  /** AUTHZ_CORS_ORIGINS, as URL.origin gives them. */
  corsOrigins: readonly string[];
  /** The configured listen host (`127.0.0.1`, `0.0.0.0`, `::1`, a name): its own address is allowed. */
  listenHost: string;
  /** The listener speaks TLS: its own origin is https://<Host>. */
  tls: boolean;
}

/** Where a request arrived: the connection's local address and port (the listener's bound port). */
export interface Arrival {
  localAddress: string | undefined;
  localPort: number | undefined;
}

export interface BrowserPolicy {
  readonly checkHost: boolean;
  /** AUTHZ_CORS_ORIGINS lists origins: answers vary by Origin. */
  readonly corsConfigured: boolean;
  /** Null when the Host is served, else the one-line reason for refusing it. */
  refuseHost(host: string | undefined, arrival: Arrival): string | null;
  /**
   * Null when a state-changing call with this Origin may go on (no Origin: not a browser, or same-origin
   * navigation), else the reason for refusing it.
   */
  refuseOrigin(origin: string | undefined, host: string | undefined, arrival: Arrival): string | null;
  /** Whether CORS headers are sent to this origin (it is listed in AUTHZ_CORS_ORIGINS). */
  corsAllowed(origin: string | undefined): origin is string;
}

interface HostPattern {
  /** Lower case, without a trailing dot; for a wildcard, the suffix after `*` (`.example.org`). */
  name: string;
  wildcard: boolean;
  /** Undefined: any port. */
  port: number | undefined;
}

/** `host[:port]` with the host lower-cased, its trailing dot and IPv6 brackets removed; null if malformed. */
export function splitHost(value: string): { name: string; port: number | undefined } | null {
  const match = /^(?:\[([0-9a-f:.]+)\]|([^:[\]]+))(?::(\d{1,5}))?$/i.exec(value.trim());
  if (!match) return null;
  const name = (match[1] ?? match[2] ?? "").toLowerCase().replace(/\.$/, "");
  if (name === "" || (match[1] !== undefined && isIP(name) !== 6)) return null;
  const port = match[3] === undefined ? undefined : Number(match[3]);
  if (port !== undefined && (port < 1 || port > 65535)) return null;
  return { name, port };
}

function compile(pattern: string): HostPattern | null {
  const wildcard = pattern.startsWith("*.");
  const split = splitHost(wildcard ? pattern.slice(1).replace(/^\./, "x.") : pattern);
  if (!split) return null;
  return { name: wildcard ? split.name.slice(1) : split.name, wildcard, port: split.port };
}

/** An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) as the IPv4 address it is. */
function unmapped(address: string): string {
  const lower = address.toLowerCase();
  return lower.startsWith("::ffff:") && isIP(lower.slice(7)) === 4 ? lower.slice(7) : lower;
}

function isLoopbackName(name: string): boolean {
  if (name === "localhost") return true;
  const kind = isIP(name);
  if (kind === 4) return name.startsWith("127.");
  if (kind === 6) return unmapped(name) === "::1" || unmapped(name).startsWith("127.");
  return false;
}

function isWildcardAddress(host: string): boolean {
  return host === "0.0.0.0" || host === "::" || host === "[::]";
}

export function createBrowserPolicy(options: BrowserPolicyOptions): BrowserPolicy {
  const patterns = options.allowedHosts.map(compile).filter((p): p is HostPattern => p !== null);
  const listen = isWildcardAddress(options.listenHost) ? undefined : splitHost(options.listenHost)?.name;
  const cors = new Set(options.corsOrigins);
  const scheme = options.tls ? "https" : "http";
  const defaultPort = options.tls ? 443 : 80;

  /** Whether `host` (a Host header value) names this listener, arriving as `arrival`. */
  const served = (host: string, arrival: Arrival): boolean => {
    const split = splitHost(host);
    if (!split) return false;
    const port = split.port ?? defaultPort;
    const ownPort = arrival.localPort;
    // Loopback names and the listener's own address, on the listener's own port: a page can only make a
    // browser send those for a URL on this machine's port, i.e. a page this listener served.
    if (port === ownPort && (isLoopbackName(split.name) || split.name === listen)) return true;
    // The address the connection reached, as an IP literal (probes and scrapers address a pod by its IP).
    // Rebinding needs a name the attacker controls, never an IP literal.
    if (
      port === ownPort &&
      arrival.localAddress !== undefined &&
      isIP(split.name) !== 0 &&
      unmapped(split.name) === unmapped(arrival.localAddress)
    ) {
      return true;
    }
    return patterns.some(
      (pattern) =>
        (pattern.port === undefined || pattern.port === port) &&
        (pattern.wildcard ? split.name.endsWith(pattern.name) : split.name === pattern.name),
    );
  };

  /** `scheme://host[:port]` as a URL, or undefined when it is not one (`null`, garbage). */
  const parse = (value: string): URL | undefined => {
    try {
      return new URL(value);
    } catch {
      return undefined;
    }
  };

  return {
    checkHost: options.checkHost,
    corsConfigured: cors.size > 0,
    refuseHost(host, arrival) {
      if (!options.checkHost) return null;
      if (host === undefined || host.trim() === "") return "the request has no Host header";
      if (served(host, arrival)) return null;
      return `this service does not answer to the host ${JSON.stringify(host.slice(0, 100))} (AUTHZ_ALLOWED_HOSTS lists the names it answers to)`;
    },
    refuseOrigin(origin, host, arrival) {
      if (origin === undefined || cors.has(origin)) return null;
      const url = parse(origin);
      if (url && (url.protocol === "http:" || url.protocol === "https:")) {
        // The page's own origin (the Host check vouched for the name), or a name this listener answers to.
        if (host !== undefined && url.origin === parse(`${scheme}://${host.trim()}`)?.origin) return null;
        const port = url.port === "" ? (url.protocol === "https:" ? "443" : "80") : url.port;
        if (served(`${url.hostname}:${port}`, arrival)) return null;
      }
      return `a call from the web origin ${JSON.stringify(origin.slice(0, 100))} may not change anything here (AUTHZ_ALLOWED_HOSTS, AUTHZ_CORS_ORIGINS)`;
    },
    corsAllowed(origin): origin is string {
      return origin !== undefined && cors.has(origin);
    },
  };
}
