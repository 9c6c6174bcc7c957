import { describe, expect, it } from "vitest";
import { ConfigError, isLoopback, loadConfig, parseDatabaseUrl, redactDatabase } from "../src/config.ts";

function failure(env: Record<string, string>): ConfigError {
  try {
    loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error(`expected a ConfigError for ${JSON.stringify(env)}`);
}

describe("configuration", () => {
  it("has the contract's defaults", () => {
    const config = loadConfig({});
    expect(config.database).toEqual({ kind: "sqlite", path: "data/authz.db" });
    expect(config.grpcListen).toEqual({ host: "127.0.0.1", port: 50051 });
    expect(config.httpListen).toEqual({ host: "127.0.0.1", port: 8080 });
    expect(config).toMatchObject({
      logLevel: "info",
      logFormat: "auto",
      accessLog: false,
      maxBatch: 100,
      userCacheSize: 100_000,
      migrateOnStart: true,
      shutdownGraceMs: 10_000,
      maxRequestBytes: 1024 * 1024,
      serviceTokens: [],
      allowUnauthenticated: false,
      allowedHosts: [],
      corsOrigins: [],
      console: true,
    });
    expect(config.jwt).toBeUndefined();
    expect(config.tls).toBeUndefined();
    expect(config.routesFile).toBeUndefined();
  });

  it("reads AUTHZ_ROUTES_FILE as a path (the file itself is read and checked at start)", () => {
    expect(loadConfig({ AUTHZ_ROUTES_FILE: " deploy/routes.yaml " }).routesFile).toBe("deploy/routes.yaml");
    expect(loadConfig({ AUTHZ_ROUTES_FILE: "" }).routesFile).toBeUndefined();
  });

  it("reads every variable", () => {
    const config = loadConfig({
      DATABASE_URL: "postgresql://authz:secret@db.internal:5433/flip",
      AUTHZ_GRPC_LISTEN: "0.0.0.0:6000",
      AUTHZ_HTTP_LISTEN: "[::1]:6001",
      AUTHZ_LOG_LEVEL: "DEBUG",
      AUTHZ_MAX_BATCH: "7",
      AUTHZ_USER_CACHE_SIZE: "0",
      AUTHZ_MIGRATE_ON_START: "false",
      AUTHZ_SHUTDOWN_GRACE_MS: "250",
      AUTHZ_SERVICE_TOKENS: " aaaaaaaaaaaaaaaa , bbbbbbbbbbbbbbbbbbbb ",
      AUTHZ_JWT_ISSUER: "https://cognito-idp.eu-west-2.amazonaws.com/eu-west-2_Abc/",
      AUTHZ_JWT_AUDIENCE: "client123",
      AUTHZ_TLS_CERT_FILE: "cert.pem",
      AUTHZ_TLS_KEY_FILE: "key.pem",
      AUTHZ_TLS_CLIENT_CA_FILE: "ca.pem",
      AUTHZ_ALLOW_UNAUTHENTICATED: "true",
      AUTHZ_CONSOLE: "false",
      AUTHZ_LOG_FORMAT: "Pretty",
      AUTHZ_ACCESS_LOG: "true",
    });
    expect(config.database).toEqual({
      kind: "postgres",
      url: "postgresql://authz:secret@db.internal:5433/flip",
    });
    expect(config.grpcListen).toEqual({ host: "0.0.0.0", port: 6000 });
    expect(config.httpListen).toEqual({ host: "::1", port: 6001 });
    expect(config.logLevel).toBe("debug");
    expect(config.maxBatch).toBe(7);
    expect(config.userCacheSize).toBe(0);
    expect(config.migrateOnStart).toBe(false);
    expect(config.shutdownGraceMs).toBe(250);
    expect(config.serviceTokens).toEqual(["aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbb"]);
    expect(config.jwt).toEqual({
      issuer: "https://cognito-idp.eu-west-2.amazonaws.com/eu-west-2_Abc/",
      audience: "client123",
      jwksUrl: "https://cognito-idp.eu-west-2.amazonaws.com/eu-west-2_Abc/.well-known/jwks.json",
    });
    expect(config.tls).toEqual({ certFile: "cert.pem", keyFile: "key.pem", clientCaFile: "ca.pem" });
    expect(config.allowUnauthenticated).toBe(true);
    expect(config.console).toBe(false);
    expect(config.logFormat).toBe("pretty");
    expect(config.accessLog).toBe(true);
  });

  it.each([
    [{ DATABASE_URL: "mysql://x" }, "DATABASE_URL", "must start with postgres://"],
    [{ DATABASE_URL: "sqlite:" }, "DATABASE_URL", "needs a path"],
    [{ DATABASE_URL: "postgres://" }, "DATABASE_URL", "needs a host"],
    [{ AUTHZ_GRPC_LISTEN: "50051" }, "AUTHZ_GRPC_LISTEN", "host:port"],
    [{ AUTHZ_HTTP_LISTEN: "127.0.0.1:70000" }, "AUTHZ_HTTP_LISTEN", "0..65535"],
    [{ AUTHZ_HTTP_LISTEN: ":8080" }, "AUTHZ_HTTP_LISTEN", "host is empty"],
    [{ AUTHZ_LOG_LEVEL: "loud" }, "AUTHZ_LOG_LEVEL", "must be one of"],
    [{ AUTHZ_LOG_FORMAT: "xml" }, "AUTHZ_LOG_FORMAT", "must be one of auto, json, pretty"],
    [{ AUTHZ_ACCESS_LOG: "yes please" }, "AUTHZ_ACCESS_LOG", "true or false"],
    [{ AUTHZ_MAX_BATCH: "0" }, "AUTHZ_MAX_BATCH", "between 1 and"],
    [{ AUTHZ_MAX_BATCH: "ten" }, "AUTHZ_MAX_BATCH", "whole number"],
    [{ AUTHZ_USER_CACHE_SIZE: "-1" }, "AUTHZ_USER_CACHE_SIZE", "whole number"],
    [{ AUTHZ_MIGRATE_ON_START: "maybe" }, "AUTHZ_MIGRATE_ON_START", "true or false"],
    [{ AUTHZ_CONSOLE: "off-ish" }, "AUTHZ_CONSOLE", "true or false"],
    [{ AUTHZ_SHUTDOWN_GRACE_MS: "1.5" }, "AUTHZ_SHUTDOWN_GRACE_MS", "whole number"],
    [{ AUTHZ_JWT_ISSUER: "not a url" }, "AUTHZ_JWT_ISSUER", "must be a URL"],
    [{ AUTHZ_JWT_AUDIENCE: "abc" }, "AUTHZ_JWT_AUDIENCE", "AUTHZ_JWT_ISSUER is not"],
    [{ AUTHZ_TLS_CERT_FILE: "cert.pem" }, "AUTHZ_TLS_KEY_FILE", "go together"],
    [{ AUTHZ_TLS_CLIENT_CA_FILE: "ca.pem" }, "AUTHZ_TLS_CLIENT_CA_FILE", "needs AUTHZ_TLS_CERT_FILE"],
    [{ AUTHZ_LISTEN_DATABASE_URL: "postgres://db/flip" }, "AUTHZ_LISTEN_DATABASE_URL", "PostgreSQL only"],
    [
      { DATABASE_URL: "postgres://pgbouncer/flip", AUTHZ_LISTEN_DATABASE_URL: "sqlite:x.db" },
      "AUTHZ_LISTEN_DATABASE_URL",
      "PostgreSQL only",
    ],
    [
      { DATABASE_URL: "postgres://pgbouncer/flip", AUTHZ_LISTEN_DATABASE_URL: "postgres://" },
      "AUTHZ_LISTEN_DATABASE_URL",
      "needs a host",
    ],
  ])("refuses %j naming %s", (env, variable, problem) => {
    const error = failure(env);
    expect(error.variable).toBe(variable);
    expect(error.message).toContain(variable);
    expect(error.message).toContain(problem);
  });

  it("fetches signing keys only over https, or http from loopback", () => {
    expect(failure({ AUTHZ_JWT_ISSUER: "http://idp.example.com/pool" }).message).toBe(
      "AUTHZ_JWT_ISSUER: the JWKS must be fetched over https:// (http:// only from a loopback address)",
    );
    expect(
      failure({
        AUTHZ_JWT_ISSUER: "https://idp.example.com/pool",
        AUTHZ_JWKS_URL: "http://keys.example.com/jwks",
      }).variable,
    ).toBe("AUTHZ_JWKS_URL");
    expect(loadConfig({ AUTHZ_JWT_ISSUER: "http://127.0.0.1:9000/pool" }).jwt?.jwksUrl).toBe(
      "http://127.0.0.1:9000/pool/.well-known/jwks.json",
    );
    expect(loadConfig({ AUTHZ_JWT_ISSUER: "http://[::1]:9000/pool" }).jwt?.issuer).toBe(
      "http://[::1]:9000/pool",
    );
    // With the keys in a file, nothing is fetched: an http issuer is only a name to match.
    expect(
      loadConfig({ AUTHZ_JWT_ISSUER: "http://idp.example.com/pool", AUTHZ_JWKS_FILE: "jwks.json" }).jwt
        ?.jwksFile,
    ).toBe("jwks.json");
  });

  it("refuses a short service token without echoing it", () => {
    const error = failure({ AUTHZ_SERVICE_TOKENS: "long-enough-token-here,short-secret" });
    expect(error.message).toBe("AUTHZ_SERVICE_TOKENS: token #2 is shorter than 16 characters");
    expect(error.message).not.toContain("short-secret");
  });

  describe("a follower's upstream (AUTHZ_UPSTREAM)", () => {
    it.each([
      ["authz.flip.svc:50051", "authz.flip.svc:50051", false],
      ["http://authz.flip.svc:50051", "authz.flip.svc:50051", false],
      ["https://authz.flip.example", "authz.flip.example:443", true],
      ["http://authz", "authz:80", false],
      ["[::1]:50051", "[::1]:50051", false],
      ["https://[::1]:8443/", "[::1]:8443", true],
    ])("reads %s as target %s (TLS %s)", (value, target, tls) => {
      const upstream = loadConfig({ AUTHZ_UPSTREAM: value }).upstream;
      expect(upstream?.target).toBe(target);
      expect(upstream?.tls !== undefined).toBe(tls);
      expect(upstream?.maxStalenessMs).toBe(5000);
    });

    it("reads every follower setting", () => {
      const upstream = loadConfig({
        AUTHZ_UPSTREAM: "https://authz.flip.svc:50051",
        AUTHZ_UPSTREAM_TOKEN: "sidecar-token-0123456789",
        AUTHZ_UPSTREAM_CA_FILE: "ca.pem",
        AUTHZ_UPSTREAM_CERT_FILE: "client.pem",
        AUTHZ_UPSTREAM_KEY_FILE: "client.key",
        AUTHZ_UPSTREAM_MAX_STALENESS_MS: "2500",
      }).upstream;
      expect(upstream).toEqual({
        target: "authz.flip.svc:50051",
        host: "authz.flip.svc",
        tls: { caFile: "ca.pem", certFile: "client.pem", keyFile: "client.key" },
        token: "sidecar-token-0123456789",
        maxStalenessMs: 2500,
      });
    });

    it.each([
      [
        { AUTHZ_UPSTREAM: "authz:50051", DATABASE_URL: "sqlite::memory:" },
        "AUTHZ_UPSTREAM and DATABASE_URL",
        "keeps no database",
      ],
      [
        { AUTHZ_UPSTREAM: "authz:50051", AUTHZ_LISTEN_DATABASE_URL: "postgres://db/flip" },
        "AUTHZ_LISTEN_DATABASE_URL",
        "keeps no database",
      ],
      [{ AUTHZ_UPSTREAM: "authz" }, "AUTHZ_UPSTREAM", "must be host:port"],
      [{ AUTHZ_UPSTREAM: "grpc://authz:50051" }, "AUTHZ_UPSTREAM", "must be host:port"],
      [{ AUTHZ_UPSTREAM: "http://authz:50051/api" }, "AUTHZ_UPSTREAM", "no path"],
      [{ AUTHZ_UPSTREAM: "https://user:pw@authz:50051" }, "AUTHZ_UPSTREAM", "no credentials"],
      [{ AUTHZ_UPSTREAM: "authz:0" }, "AUTHZ_UPSTREAM", "port 0"],
      [{ AUTHZ_UPSTREAM_TOKEN: "sidecar-token-0123456789" }, "AUTHZ_UPSTREAM_TOKEN", "AUTHZ_UPSTREAM is not"],
      [
        { AUTHZ_UPSTREAM: "authz:1", AUTHZ_UPSTREAM_TOKEN: "short" },
        "AUTHZ_UPSTREAM_TOKEN",
        "shorter than 16",
      ],
      [{ AUTHZ_UPSTREAM: "authz:1", AUTHZ_UPSTREAM_CA_FILE: "ca.pem" }, "AUTHZ_UPSTREAM_CA_FILE", "https://"],
      [
        { AUTHZ_UPSTREAM: "https://a", AUTHZ_UPSTREAM_CERT_FILE: "c.pem" },
        "AUTHZ_UPSTREAM_KEY_FILE",
        "go together",
      ],
      [
        { AUTHZ_UPSTREAM: "authz:1", AUTHZ_UPSTREAM_MAX_STALENESS_MS: "5s" },
        "AUTHZ_UPSTREAM_MAX_STALENESS_MS",
        "whole number",
      ],
      [
        { AUTHZ_UPSTREAM: "authz:1", AUTHZ_UPSTREAM_MAX_STALENESS_MS: "10" },
        "AUTHZ_UPSTREAM_MAX_STALENESS_MS",
        "between 100",
      ],
    ])("refuses %j naming %s", (env, variable, problem) => {
      const error = failure(env);
      expect(error.variable).toBe(variable);
      expect(error.message).toContain(problem);
    });

    it("never echoes the upstream token", () => {
      const error = failure({ AUTHZ_UPSTREAM: "authz:1", AUTHZ_UPSTREAM_TOKEN: "with space-0123456789" });
      expect(error.message).toBe("AUTHZ_UPSTREAM_TOKEN: has spaces or characters outside visible ASCII");
    });
  });

  it("reads AUTHZ_LISTEN_DATABASE_URL beside a PostgreSQL DATABASE_URL", () => {
    expect(
      loadConfig({
        DATABASE_URL: "postgres://authz@pgbouncer:6432/flip",
        AUTHZ_LISTEN_DATABASE_URL: "postgres://authz@db:5432/flip",
      }).database,
    ).toEqual({
      kind: "postgres",
      url: "postgres://authz@pgbouncer:6432/flip",
      listenUrl: "postgres://authz@db:5432/flip",
    });
    expect(loadConfig({ DATABASE_URL: "postgres://db/flip" }).database).toEqual({
      kind: "postgres",
      url: "postgres://db/flip",
    });
  });

  it("never shows a database password", () => {
    const database = parseDatabaseUrl("postgres://authz:s3cr3t@db:5432/flip?password=other");
    const shown = redactDatabase(database);
    expect(shown).not.toContain("s3cr3t");
    expect(shown).not.toContain("other");
    expect(shown).toContain("db:5432/flip");
    expect(redactDatabase({ kind: "sqlite", path: "data/authz.db" })).toBe("sqlite:data/authz.db");
  });

  it("knows loopback addresses", () => {
    expect(["127.0.0.1", "127.1.2.3", "::1", "localhost"].map(isLoopback)).toEqual([true, true, true, true]);
    expect(["0.0.0.0", "::", "10.0.0.1", "192.168.1.2", "example.com"].map(isLoopback)).toEqual([
      false,
      false,
      false,
      false,
      false,
    ]);
  });

  it("reads AUTHZ_ALLOWED_HOSTS (names, wildcards, IPs, optional ports) and AUTHZ_CORS_ORIGINS", () => {
    const config = loadConfig({
      AUTHZ_ALLOWED_HOSTS: " Flip-Authz , *.Example.org:8443,10.0.0.7,[fd00::7]:80, authz.example.net. ,",
      AUTHZ_CORS_ORIGINS: "https://Console.Example.org, http://localhost:5173/ ,https://x.example.org:443",
    });
    expect(config.allowedHosts).toEqual([
      "flip-authz",
      "*.example.org:8443",
      "10.0.0.7",
      "[fd00::7]:80",
      "authz.example.net.",
    ]);
    expect(config.corsOrigins).toEqual([
      "https://console.example.org",
      "http://localhost:5173",
      "https://x.example.org",
    ]);
  });

  it.each([
    [
      "AUTHZ_ALLOWED_HOSTS",
      "*",
      "a bare * would answer to every name, which is what the check prevents; list the names",
    ],
    [
      "AUTHZ_ALLOWED_HOSTS",
      "https://authz.example.org",
      '"https://authz.example.org" is a URL; list host names (authz.example.org)',
    ],
    [
      "AUTHZ_ALLOWED_HOSTS",
      "ok.example.org,bad host",
      '"bad host" is not a host name, *.domain wildcard or IP address (with an optional :port)',
    ],
    ["AUTHZ_ALLOWED_HOSTS", "example.org:99999", '"example.org:99999": the port must be 1..65535'],
    [
      "AUTHZ_ALLOWED_HOSTS",
      "a.*.example.org",
      '"a.*.example.org" is not a host name, *.domain wildcard or IP address (with an optional :port)',
    ],
    [
      "AUTHZ_ALLOWED_HOSTS",
      "[not-v6]",
      '"[not-v6]" is not a host name, *.domain wildcard or IP address (with an optional :port)',
    ],
    ["AUTHZ_CORS_ORIGINS", "*", "* is not allowed: list the origins that may call"],
    [
      "AUTHZ_CORS_ORIGINS",
      "console.example.org",
      '"console.example.org" is not an origin (http:// or https://, a host, an optional port, no path)',
    ],
    [
      "AUTHZ_CORS_ORIGINS",
      "https://console.example.org/app",
      '"https://console.example.org/app" is not an origin (http:// or https://, a host, an optional port, no path)',
    ],
    [
      "AUTHZ_CORS_ORIGINS",
      "ftp://console.example.org",
      '"ftp://console.example.org" is not an origin (http:// or https://, a host, an optional port, no path)',
    ],
  ])("refuses %s=%j, naming the variable and the entry", (variable, value, problem) => {
    const error = failure({ [variable]: value });
    expect(error.variable).toBe(variable);
    expect(error.message).toBe(`${variable}: ${problem}`);
  });
});
