// The only reader of process.env: every setting of API.md's "Configuration", with its default, validated
// once at start. A bad value throws ConfigError naming the variable; secrets never appear in messages.

import { isIP } from "node:net";

export class ConfigError extends Error {
  readonly variable: string;
  constructor(variable: string, problem: string) {
    super(`${variable}: ${problem}`);
    this.variable = variable;
  }
}

export type DatabaseConfig =
  | { kind: "sqlite"; path: string }
  | {
      kind: "postgres";
      url: string;
      /**
       * `AUTHZ_LISTEN_DATABASE_URL`: a direct session for the change feed's LISTEN connection (and the
       * migration lock) when `url` goes through a transaction pooler such as PgBouncer.
       */
      listenUrl?: string;
    };

export interface ListenAddress {
  host: string;
  port: number;
}

export interface JwtConfig {
  issuer: string;
  audience?: string;
  jwksFile?: string;
  jwksUrl: string;
}

export interface TlsConfig {
  certFile: string;
  keyFile: string;
  clientCaFile?: string;
}

/** A follower's upstream (SIDECARS.md §5): a flip-authz gRPC listener it fills its caches from. */
export interface UpstreamConfig {
  /** `host:port`, as a gRPC target (IPv6 hosts in brackets). */
  target: string;
  /** The host the upstream's certificate must name. */
  host: string;
  /** Set for https:// upstreams: TLS, verified against the system's CAs unless `caFile` is set. */
  tls?: { caFile?: string; certFile?: string; keyFile?: string };
  /** A service token the upstream accepts, sent on the follower's own calls. */
  token?: string;
  /** How long plain checks may be answered from the caches after the upstream was last heard from. */
  maxStalenessMs: number;
}

export interface Config {
  /** Unused when `upstream` is set: a follower keeps no database. */
  database: DatabaseConfig;
  upstream?: UpstreamConfig;
  grpcListen: ListenAddress;
  httpListen: ListenAddress;
  logLevel: "fatal" | "error" | "warn" | "info" | "debug" | "trace" | "silent";
  maxBatch: number;
  userCacheSize: number;
  migrateOnStart: boolean;
  shutdownGraceMs: number;
  maxRequestBytes: number;
  serviceTokens: string[];
  jwt?: JwtConfig;
  allowUnauthenticated: boolean;
  tls?: TlsConfig;
  /**
   * Extra names the HTTP listener answers to (`AUTHZ_ALLOWED_HOSTS`): lower-case `name`, `name:port`,
   * `*.suffix` or `*.suffix:port`, bracketed IPv6. Empty when unset.
   */
  allowedHosts: string[];
  /** Origins that may call the HTTP listener from a browser (`AUTHZ_CORS_ORIGINS`), as `URL.origin` gives them. */
  corsOrigins: string[];
  /** AUTHZ_ROUTES_FILE: the route table for ext_authz and forward auth (read and checked at start). */
  routesFile?: string;
  /** Serve the web console at /console/ on the HTTP listener (`AUTHZ_CONSOLE`, default true). */
  console: boolean;
  /** AUTHZ_LOG_FORMAT: JSON lines, readable lines, or readable on a terminal only (default "auto"). */
  logFormat: "auto" | "json" | "pretty";
  /** AUTHZ_ACCESS_LOG: one info line per call (method, code, duration, peer, request id). Default false. */
  accessLog: boolean;
  /** OpenTelemetry tracing, from the standard OTEL_* variables; absent when no OTLP endpoint is set. */
  tracing?: TracingConfig;
}

/** The OTEL_* variables tracing honours, read and checked here (src/tracing/ builds the SDK from them). */
export interface TracingConfig {
  /** Where spans go, as OTLP/HTTP protobuf: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or ENDPOINT + /v1/traces. */
  url: string;
  /** OTEL_EXPORTER_OTLP_HEADERS, then OTEL_EXPORTER_OTLP_TRACES_HEADERS (which wins), decoded. */
  headers: Record<string, string>;
  /** OTEL_SERVICE_NAME, else service.name from OTEL_RESOURCE_ATTRIBUTES, else "flip-authz". */
  serviceName: string;
  /** OTEL_RESOURCE_ATTRIBUTES, decoded. */
  resourceAttributes: Record<string, string>;
  /** OTEL_TRACES_SAMPLER (default parentbased_always_on); `ratio` from OTEL_TRACES_SAMPLER_ARG (default 1). */
  sampler: { kind: TraceSampler; ratio: number };
  /** OTEL_BSP_*: the batch span processor's settings. */
  batch: {
    scheduledDelayMillis: number;
    exportTimeoutMillis: number;
    maxQueueSize: number;
    maxExportBatchSize: number;
  };
}

export const TRACE_SAMPLERS = [
  "always_on",
  "always_off",
  "traceidratio",
  "parentbased_always_on",
  "parentbased_always_off",
  "parentbased_traceidratio",
] as const;
export type TraceSampler = (typeof TRACE_SAMPLERS)[number];

export type Env = Record<string, string | undefined>;

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
const LOG_FORMATS = ["auto", "json", "pretty"] as const;

export const DEFAULT_DATABASE_URL = "sqlite:data/authz.db";

/** Parses `DATABASE_URL` (also used by the CLI); `variable` names the source in errors. */
export function parseDatabaseUrl(value: string, variable = "DATABASE_URL"): DatabaseConfig {
  if (value.startsWith("sqlite:")) {
    const path = value.slice("sqlite:".length);
    if (path === "")
      throw new ConfigError(variable, "sqlite: needs a path (sqlite:data/authz.db or sqlite::memory:)");
    return { kind: "sqlite", path };
  }
  if (/^postgres(ql)?:\/\//.test(value)) {
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      throw new ConfigError(variable, "not a valid postgres:// URL");
    }
    if (url.hostname === "" && !url.searchParams.has("host")) {
      throw new ConfigError(variable, "a postgres:// URL needs a host");
    }
    return { kind: "postgres", url: value };
  }
  throw new ConfigError(variable, "must start with postgres://, postgresql:// or sqlite:");
}

/** A database URL without its password, for logs and messages. */
export function redactDatabase(database: DatabaseConfig): string {
  if (database.kind === "sqlite") return `sqlite:${database.path}`;
  try {
    const url = new URL(database.url);
    if (url.password !== "") url.password = "***";
    url.searchParams.delete("password");
    return url.toString();
  } catch {
    return "postgres://(unparseable)";
  }
}

export function parseListen(value: string, variable: string): ListenAddress {
  const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(value);
  if (!match)
    throw new ConfigError(variable, "must be host:port (127.0.0.1:50051, [::1]:50051, 0.0.0.0:50051)");
  const host = match[1] ?? match[2] ?? "";
  const port = Number(match[3]);
  if (host === "") throw new ConfigError(variable, "the host is empty (use 0.0.0.0 to listen everywhere)");
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new ConfigError(variable, "port must be 0..65535");
  return { host, port };
}

/** Parses `AUTHZ_UPSTREAM`: `host:port`, `http://host[:port]` or `https://host[:port]`. */
export function parseUpstream(value: string): Pick<UpstreamConfig, "target" | "host"> & { tls: boolean } {
  const variable = "AUTHZ_UPSTREAM";
  const usage = "must be host:port, http://host:port or https://host:port (a flip-authz gRPC listener)";
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(value)) {
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      throw new ConfigError(variable, usage);
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") throw new ConfigError(variable, usage);
    if (url.username !== "" || url.password !== "" || url.search !== "" || url.hash !== "") {
      throw new ConfigError(variable, `${usage}: no credentials, query or fragment`);
    }
    if (url.pathname !== "/" && url.pathname !== "") {
      throw new ConfigError(variable, `${usage}: no path (gRPC has none)`);
    }
    if (url.hostname === "") throw new ConfigError(variable, `${usage}: the host is empty`);
    const tls = url.protocol === "https:";
    const port = url.port === "" ? (tls ? 443 : 80) : Number(url.port);
    return { target: `${url.hostname}:${port}`, host: url.hostname.replace(/^\[|\]$/g, ""), tls };
  }
  const { host, port } = parseListen(value, variable);
  if (port === 0) throw new ConfigError(variable, `${usage}: port 0 is no address`);
  return { target: host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`, host, tls: false };
}

/** True when the address can only be reached from this machine. */
export function isLoopback(host: string): boolean {
  if (host === "localhost") return true;
  const kind = isIP(host);
  if (kind === 4) return host.startsWith("127.");
  if (kind === 6) return host === "::1" || host.toLowerCase() === "0:0:0:0:0:0:0:1";
  return false;
}

/** A comma-separated list, entries trimmed, empty ones dropped. */
function list(env: Env, variable: string): string[] {
  return (env[variable] ?? "")
    .split(",")
    .map((entry) => entry.trim())
    .filter((entry) => entry !== "");
}

const HOST_NAME = /^(?:\*\.)?(?:[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?\.)*[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$/;

/**
 * One `AUTHZ_ALLOWED_HOSTS` entry, checked and lower-cased: a host name (`flip-authz`, `authz.example.org`),
 * a wildcard over subdomains (`*.example.org`), an IP address (`10.0.0.7`, `[fd00::7]`), each with an
 * optional `:port` (without one, any port).
 */
export function parseHostPattern(entry: string, variable = "AUTHZ_ALLOWED_HOSTS"): string {
  const value = entry.toLowerCase();
  if (value.includes("://") || value.includes("/")) {
    throw new ConfigError(variable, `${JSON.stringify(entry)} is a URL; list host names (authz.example.org)`);
  }
  const match = /^(\[[^\]]+\]|[^:]+)(?::(\d{1,5}))?$/.exec(value);
  const host = match?.[1] ?? "";
  const port = match?.[2];
  if (port !== undefined && Number(port) > 65535) {
    throw new ConfigError(variable, `${JSON.stringify(entry)}: the port must be 1..65535`);
  }
  const bare = host.startsWith("[") ? host.slice(1, -1) : host;
  const valid = host.startsWith("[")
    ? isIP(bare) === 6
    : host !== "*" && (isIP(host) === 4 || HOST_NAME.test(host.replace(/\.$/, "")));
  if (!match || !valid) {
    throw new ConfigError(
      variable,
      host === "*"
        ? "a bare * would answer to every name, which is what the check prevents; list the names"
        : `${JSON.stringify(entry)} is not a host name, *.domain wildcard or IP address (with an optional :port)`,
    );
  }
  return value;
}

/** One `AUTHZ_CORS_ORIGINS` entry: `scheme://host[:port]`, nothing else, as browsers send it in `Origin`. */
export function parseOrigin(entry: string, variable = "AUTHZ_CORS_ORIGINS"): string {
  if (entry === "*") throw new ConfigError(variable, "* is not allowed: list the origins that may call");
  let url: URL | undefined;
  try {
    url = new URL(entry);
  } catch {
    url = undefined;
  }
  const bare = url && /^[a-z][a-z0-9+.-]*:\/\/[^/?#@]+\/?$/i.test(entry);
  if (!url || !bare || !["http:", "https:"].includes(url.protocol)) {
    throw new ConfigError(
      variable,
      `${JSON.stringify(entry)} is not an origin (http:// or https://, a host, an optional port, no path)`,
    );
  }
  return url.origin;
}

function integer(env: Env, variable: string, fallback: number, min: number, max: number): number {
  const raw = env[variable];
  if (raw === undefined || raw === "") return fallback;
  if (!/^\d+$/.test(raw.trim())) throw new ConfigError(variable, `must be a whole number (${min}..${max})`);
  const value = Number(raw.trim());
  if (value < min || value > max) throw new ConfigError(variable, `must be between ${min} and ${max}`);
  return value;
}

function boolean(env: Env, variable: string, fallback: boolean): boolean {
  const raw = env[variable]?.trim().toLowerCase();
  if (raw === undefined || raw === "") return fallback;
  if (["true", "1", "yes", "on"].includes(raw)) return true;
  if (["false", "0", "no", "off"].includes(raw)) return false;
  throw new ConfigError(variable, "must be true or false");
}

function optional(env: Env, variable: string): string | undefined {
  const raw = env[variable]?.trim();
  return raw === undefined || raw === "" ? undefined : raw;
}

function loadUpstream(env: Env): UpstreamConfig | undefined {
  const raw = optional(env, "AUTHZ_UPSTREAM");
  const settings = [
    "AUTHZ_UPSTREAM_TOKEN",
    "AUTHZ_UPSTREAM_CA_FILE",
    "AUTHZ_UPSTREAM_CERT_FILE",
    "AUTHZ_UPSTREAM_KEY_FILE",
    "AUTHZ_UPSTREAM_MAX_STALENESS_MS",
  ];
  if (raw === undefined) {
    for (const variable of settings) {
      if (optional(env, variable) !== undefined)
        throw new ConfigError(variable, "is set but AUTHZ_UPSTREAM is not");
    }
    return undefined;
  }
  if (optional(env, "AUTHZ_LISTEN_DATABASE_URL") !== undefined) {
    throw new ConfigError("AUTHZ_LISTEN_DATABASE_URL", "a follower (AUTHZ_UPSTREAM) keeps no database");
  }
  if (optional(env, "DATABASE_URL") !== undefined) {
    throw new ConfigError(
      "AUTHZ_UPSTREAM and DATABASE_URL",
      "a follower (AUTHZ_UPSTREAM) keeps no database: set one or the other",
    );
  }
  const { target, host, tls } = parseUpstream(raw);
  const upstream: UpstreamConfig = {
    target,
    host,
    maxStalenessMs: integer(env, "AUTHZ_UPSTREAM_MAX_STALENESS_MS", 5000, 100, 3_600_000),
  };
  const token = optional(env, "AUTHZ_UPSTREAM_TOKEN");
  if (token !== undefined) {
    // Never echo the token.
    if (token.length < 16) throw new ConfigError("AUTHZ_UPSTREAM_TOKEN", "is shorter than 16 characters");
    if (!/^[\x21-\x7e]+$/.test(token)) {
      throw new ConfigError("AUTHZ_UPSTREAM_TOKEN", "has spaces or characters outside visible ASCII");
    }
    upstream.token = token;
  }
  const caFile = optional(env, "AUTHZ_UPSTREAM_CA_FILE");
  const certFile = optional(env, "AUTHZ_UPSTREAM_CERT_FILE");
  const keyFile = optional(env, "AUTHZ_UPSTREAM_KEY_FILE");
  if ((certFile === undefined) !== (keyFile === undefined)) {
    throw new ConfigError(
      certFile === undefined ? "AUTHZ_UPSTREAM_CERT_FILE" : "AUTHZ_UPSTREAM_KEY_FILE",
      "AUTHZ_UPSTREAM_CERT_FILE and AUTHZ_UPSTREAM_KEY_FILE go together",
    );
  }
  if (tls) {
    upstream.tls = {};
    if (caFile !== undefined) upstream.tls.caFile = caFile;
    if (certFile !== undefined && keyFile !== undefined) {
      upstream.tls.certFile = certFile;
      upstream.tls.keyFile = keyFile;
    }
  } else {
    const stray =
      caFile !== undefined
        ? "AUTHZ_UPSTREAM_CA_FILE"
        : certFile !== undefined
          ? "AUTHZ_UPSTREAM_CERT_FILE"
          : undefined;
    if (stray !== undefined) throw new ConfigError(stray, "needs an https:// AUTHZ_UPSTREAM");
  }
  return upstream;
}

/** Reads and validates the whole configuration; throws ConfigError on the first bad variable. */
export function loadConfig(env: Env = process.env): Config {
  const upstream = loadUpstream(env);
  const database = parseDatabaseUrl(optional(env, "DATABASE_URL") ?? DEFAULT_DATABASE_URL);
  const listenUrl = optional(env, "AUTHZ_LISTEN_DATABASE_URL");
  if (listenUrl !== undefined) {
    const listen = parseDatabaseUrl(listenUrl, "AUTHZ_LISTEN_DATABASE_URL");
    if (listen.kind !== "postgres" || database.kind !== "postgres") {
      throw new ConfigError(
        "AUTHZ_LISTEN_DATABASE_URL",
        "is for PostgreSQL only: both it and DATABASE_URL must be postgres:// URLs",
      );
    }
    database.listenUrl = listen.url;
  }
  const grpcListen = parseListen(
    optional(env, "AUTHZ_GRPC_LISTEN") ?? "127.0.0.1:50051",
    "AUTHZ_GRPC_LISTEN",
  );
  const httpListen = parseListen(optional(env, "AUTHZ_HTTP_LISTEN") ?? "127.0.0.1:8080", "AUTHZ_HTTP_LISTEN");

  const logLevel = (optional(env, "AUTHZ_LOG_LEVEL") ?? "info").toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new ConfigError("AUTHZ_LOG_LEVEL", `must be one of ${LOG_LEVELS.join(", ")}`);
  }
  const logFormat = (optional(env, "AUTHZ_LOG_FORMAT") ?? "auto").toLowerCase();
  if (!(LOG_FORMATS as readonly string[]).includes(logFormat)) {
    throw new ConfigError("AUTHZ_LOG_FORMAT", `must be one of ${LOG_FORMATS.join(", ")}`);
  }

  const serviceTokens = list(env, "AUTHZ_SERVICE_TOKENS");
  serviceTokens.forEach((token, index) => {
    // Never echo the token itself: say which one (by position) is too short.
    if (token.length < 16) {
      throw new ConfigError("AUTHZ_SERVICE_TOKENS", `token #${index + 1} is shorter than 16 characters`);
    }
  });

  let jwt: JwtConfig | undefined;
  const issuer = optional(env, "AUTHZ_JWT_ISSUER");
  if (issuer !== undefined) {
    try {
      new URL(issuer);
    } catch {
      throw new ConfigError(
        "AUTHZ_JWT_ISSUER",
        "must be a URL (https://cognito-idp.<region>.amazonaws.com/<pool id>)",
      );
    }
    const jwksUrl = optional(env, "AUTHZ_JWKS_URL") ?? `${issuer.replace(/\/+$/, "")}/.well-known/jwks.json`;
    let parsed: URL;
    try {
      parsed = new URL(jwksUrl);
    } catch {
      throw new ConfigError("AUTHZ_JWKS_URL", "must be a URL");
    }
    // Signing keys fetched in clear text could be swapped on the way: https, except from this machine.
    if (
      parsed.protocol !== "https:" &&
      !(parsed.protocol === "http:" && isLoopback(parsed.hostname.replace(/^\[|\]$/g, "")))
    ) {
      if (optional(env, "AUTHZ_JWKS_FILE") === undefined) {
        throw new ConfigError(
          optional(env, "AUTHZ_JWKS_URL") === undefined ? "AUTHZ_JWT_ISSUER" : "AUTHZ_JWKS_URL",
          "the JWKS must be fetched over https:// (http:// only from a loopback address)",
        );
      }
    }
    jwt = { issuer, jwksUrl };
    const audience = optional(env, "AUTHZ_JWT_AUDIENCE");
    if (audience !== undefined) jwt.audience = audience;
    const jwksFile = optional(env, "AUTHZ_JWKS_FILE");
    if (jwksFile !== undefined) jwt.jwksFile = jwksFile;
  } else {
    for (const variable of ["AUTHZ_JWT_AUDIENCE", "AUTHZ_JWKS_FILE", "AUTHZ_JWKS_URL"]) {
      if (optional(env, variable) !== undefined)
        throw new ConfigError(variable, "is set but AUTHZ_JWT_ISSUER is not");
    }
  }

  let tls: TlsConfig | undefined;
  const certFile = optional(env, "AUTHZ_TLS_CERT_FILE");
  const keyFile = optional(env, "AUTHZ_TLS_KEY_FILE");
  const clientCaFile = optional(env, "AUTHZ_TLS_CLIENT_CA_FILE");
  if ((certFile === undefined) !== (keyFile === undefined)) {
    throw new ConfigError(
      certFile === undefined ? "AUTHZ_TLS_CERT_FILE" : "AUTHZ_TLS_KEY_FILE",
      "AUTHZ_TLS_CERT_FILE and AUTHZ_TLS_KEY_FILE go together",
    );
  }
  if (certFile !== undefined && keyFile !== undefined) {
    tls = { certFile, keyFile };
    if (clientCaFile !== undefined) tls.clientCaFile = clientCaFile;
  } else if (clientCaFile !== undefined) {
    throw new ConfigError("AUTHZ_TLS_CLIENT_CA_FILE", "needs AUTHZ_TLS_CERT_FILE and AUTHZ_TLS_KEY_FILE");
  }

  const config: Config = {
    database,
    grpcListen,
    httpListen,
    logLevel: logLevel as Config["logLevel"],
    maxBatch: integer(env, "AUTHZ_MAX_BATCH", 100, 1, 10_000),
    userCacheSize: integer(env, "AUTHZ_USER_CACHE_SIZE", 100_000, 0, 100_000_000),
    migrateOnStart: boolean(env, "AUTHZ_MIGRATE_ON_START", true),
    shutdownGraceMs: integer(env, "AUTHZ_SHUTDOWN_GRACE_MS", 10_000, 0, 3_600_000),
    maxRequestBytes: integer(env, "AUTHZ_MAX_REQUEST_BYTES", 1024 * 1024, 1024, 64 * 1024 * 1024),
    serviceTokens,
    allowUnauthenticated: boolean(env, "AUTHZ_ALLOW_UNAUTHENTICATED", false),
    allowedHosts: list(env, "AUTHZ_ALLOWED_HOSTS").map((entry) => parseHostPattern(entry)),
    corsOrigins: list(env, "AUTHZ_CORS_ORIGINS").map((entry) => parseOrigin(entry)),
    console: boolean(env, "AUTHZ_CONSOLE", true),
    logFormat: logFormat as Config["logFormat"],
    accessLog: boolean(env, "AUTHZ_ACCESS_LOG", false),
  };
  if (jwt) config.jwt = jwt;
  if (tls) config.tls = tls;
  const routesFile = optional(env, "AUTHZ_ROUTES_FILE");
  if (routesFile !== undefined) config.routesFile = routesFile;
  if (upstream) config.upstream = upstream;
  const tracing = loadTracing(env);
  if (tracing) config.tracing = tracing;
  return config;
}

/**
 * The OTEL_* variables, as the OpenTelemetry specification defines them, for the traces signal over
 * OTLP/HTTP protobuf. Read only when an endpoint is set and OTEL_SDK_DISABLED / OTEL_TRACES_EXPORTER do
 * not turn tracing off; then a bad value is a ConfigError naming the variable (the SDK would only warn
 * and drop spans). Header values and URLs are never echoed: they may carry credentials.
 */
export function loadTracing(env: Env): TracingConfig | undefined {
  const tracesEndpoint = optional(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
  const endpoint = optional(env, "OTEL_EXPORTER_OTLP_ENDPOINT");
  if (tracesEndpoint === undefined && endpoint === undefined) return undefined;
  if (boolean(env, "OTEL_SDK_DISABLED", false)) return undefined;
  const exporter = optional(env, "OTEL_TRACES_EXPORTER")?.toLowerCase();
  if (exporter === "none") return undefined;
  if (exporter !== undefined && exporter !== "otlp") {
    throw new ConfigError("OTEL_TRACES_EXPORTER", "must be otlp or none (spans go over OTLP/HTTP protobuf)");
  }
  for (const variable of ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"]) {
    const protocol = optional(env, variable);
    if (protocol !== undefined && protocol !== "http/protobuf") {
      throw new ConfigError(variable, "must be http/protobuf (the only OTLP protocol this build exports)");
    }
  }
  const url =
    tracesEndpoint !== undefined
      ? otlpUrl(tracesEndpoint, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
      : `${otlpUrl(endpoint ?? "", "OTEL_EXPORTER_OTLP_ENDPOINT").replace(/\/+$/, "")}/v1/traces`;
  const headers = {
    ...keyValueList(env, "OTEL_EXPORTER_OTLP_HEADERS", false),
    ...keyValueList(env, "OTEL_EXPORTER_OTLP_TRACES_HEADERS", false),
  };
  const resourceAttributes = keyValueList(env, "OTEL_RESOURCE_ATTRIBUTES", true);
  const serviceName =
    optional(env, "OTEL_SERVICE_NAME") ?? resourceAttributes["service.name"] ?? "flip-authz";

  const kind = (optional(env, "OTEL_TRACES_SAMPLER") ?? "parentbased_always_on").toLowerCase();
  if (!(TRACE_SAMPLERS as readonly string[]).includes(kind)) {
    throw new ConfigError("OTEL_TRACES_SAMPLER", `must be one of ${TRACE_SAMPLERS.join(", ")}`);
  }
  let ratio = 1;
  const arg = optional(env, "OTEL_TRACES_SAMPLER_ARG");
  // The argument means something only to the ratio samplers; the specification says to ignore it otherwise.
  if (arg !== undefined && kind.endsWith("traceidratio")) {
    ratio = Number(arg);
    if (!/^[0-9.eE+-]+$/.test(arg) || !Number.isFinite(ratio) || ratio < 0 || ratio > 1) {
      throw new ConfigError(
        "OTEL_TRACES_SAMPLER_ARG",
        "must be a number between 0 and 1 (the share of traces kept)",
      );
    }
  }
  const maxQueueSize = integer(env, "OTEL_BSP_MAX_QUEUE_SIZE", 2048, 1, 1_000_000);
  const maxExportBatchSize = integer(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, 1, 1_000_000);
  if (maxExportBatchSize > maxQueueSize) {
    throw new ConfigError(
      "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
      "must not be larger than OTEL_BSP_MAX_QUEUE_SIZE",
    );
  }
  return {
    url,
    headers,
    serviceName,
    resourceAttributes,
    sampler: { kind: kind as TraceSampler, ratio },
    batch: {
      scheduledDelayMillis: integer(env, "OTEL_BSP_SCHEDULE_DELAY", 5000, 0, 3_600_000),
      exportTimeoutMillis: integer(env, "OTEL_BSP_EXPORT_TIMEOUT", 30_000, 1, 3_600_000),
      maxQueueSize,
      maxExportBatchSize,
    },
  };
}

/** An OTLP endpoint: an http:// or https:// URL with a host (not echoed: it may hold credentials). */
function otlpUrl(value: string, variable: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(variable, "is not a URL (http://collector:4318 or https://collector:4318)");
  }
  if ((url.protocol !== "http:" && url.protocol !== "https:") || url.hostname === "") {
    throw new ConfigError(variable, "must be an http:// or https:// URL with a host (OTLP/HTTP)");
  }
  return url.toString();
}

const HEADER_KEY = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/**
 * A W3C-Baggage-style list: `key=value,key2=value2`, values percent-encoded (decoded here). Entries are named
 * by position, never by value. `attributes`: keys are resource attribute names (any non-empty text).
 */
function keyValueList(env: Env, variable: string, attributes: boolean): Record<string, string> {
  const raw = optional(env, variable);
  const result: Record<string, string> = {};
  if (raw === undefined) return result;
  raw.split(",").forEach((entry, index) => {
    if (entry.trim() === "") return;
    const at = entry.indexOf("=");
    const key = at < 0 ? "" : entry.slice(0, at).trim();
    if (at < 0 || key === "" || (!attributes && !HEADER_KEY.test(key))) {
      throw new ConfigError(
        variable,
        `entry #${index + 1} is not key=value${attributes ? "" : " (a header name)"}`,
      );
    }
    try {
      result[attributes ? decodeURIComponent(key) : key] = decodeURIComponent(entry.slice(at + 1).trim());
    } catch {
      throw new ConfigError(variable, `entry #${index + 1} has a malformed %-escape`);
    }
  });
  return result;
}
