// The composition root: builds the store, the change hub, the cached reader, the domain, the service and
// both listeners from a Config, and takes them down again in order. Tests start it on port 0. A follower
// (AUTHZ_UPSTREAM) builds the same hub, reader and read-side domain over its upstream instead of a store.

import { setTimeout as sleep } from "node:timers/promises";
import type { ServiceImpl } from "@connectrpc/connect";
import { AuthzService } from "../gen/flip/authz/v1/authz_pb.ts";
import { assertStartAllowed, createAuthenticator } from "./auth/authenticator.ts";
import { WRITE_METHODS } from "./auth/rules.ts";
import { Authz, AuthzQueries } from "./authz/authz.ts";
import { CachedReader } from "./authz/cached-reader.ts";
import { ChangeHub } from "./authz/change-hub.ts";
import { CACHED, createDirectReader } from "./authz/reader.ts";
import type { Store } from "./authz/store.ts";
import { type Config, ConfigError, redactDatabase } from "./config.ts";
import { createRouteGuard, type RouteGuard } from "./guard/decide.ts";
import {
  checkRouteTable,
  EMPTY_ROUTE_TABLE,
  loadRouteTable,
  type RouteTable,
  RouteTableError,
} from "./guard/routes.ts";
import type { Logger } from "./logger.ts";
import { createGuard } from "./rpc/guard.ts";
import { createAuthzService, createFollowerService } from "./rpc/service.ts";
import { createBrowserPolicy } from "./server/browser-policy.ts";
import { registerCacheMetrics, registerFeedLag } from "./server/cache-metrics.ts";
import { loadConsole } from "./server/console.ts";
import { CHANGE_FEED, createHealthState, type HealthState } from "./server/health.ts";
import { type RunningServers, startServers } from "./server/listen.ts";
import { createRpcMetrics } from "./server/metrics.ts";
import { createTransportSecurity } from "./server/security.ts";
import { openStore } from "./store/index.ts";
import { startTracing, type Tracing } from "./tracing/index.ts";
import { openUpstream, type UpstreamSource } from "./upstream/index.ts";

export interface App {
  grpcPort: number;
  httpPort: number;
  store: Store;
  authz: Authz;
  reader: CachedReader;
  health: HealthState;
  /** Health NOT_SERVING, drain both listeners within the grace period, then close the database. */
  shutdown(): Promise<void>;
}

export interface FollowerApp {
  grpcPort: number;
  httpPort: number;
  source: UpstreamSource;
  authz: AuthzQueries;
  reader: CachedReader;
  health: HealthState;
  /** Health NOT_SERVING, drain both listeners within the grace period, then close the upstream channel. */
  shutdown(): Promise<void>;
}

/** How often the database is pinged for health when nothing else has shown it to be down. */
const PING_INTERVAL_MS = 5000;

/**
 * Change-log retention, the one place it is set: entries older than this are pruned, so WatchChanges can
 * resume from a revision up to this old (older is INVALID_ARGUMENT naming `after`: reload and watch from
 * now). Every replica prunes on its own timer; the delete is idempotent and keeps the newest entry, so
 * doing it from several processes at once costs little and is safe.
 */
export const CHANGE_LOG_RETENTION_MS = 7 * 24 * 60 * 60 * 1000;
/** How often each replica prunes the change log (and once shortly after start). */
const PRUNE_INTERVAL_MS = 60 * 60 * 1000;
const FIRST_PRUNE_DELAY_MS = 60 * 1000;

/** A route file problem as a start error naming AUTHZ_ROUTES_FILE (the message names the file and route). */
function routesError(error: unknown): unknown {
  return error instanceof RouteTableError ? new ConfigError("AUTHZ_ROUTES_FILE", error.message) : error;
}

/** Everything that can refuse the start is checked before anything is opened. */
function prepare(config: Config, logger: Logger) {
  const openWarning = assertStartAllowed(config);
  const authenticator = createAuthenticator(config, {
    onKeyFetchError: (error) => logger.warn({ err: error }, "fetching the JWKS failed"),
  });
  let routes: RouteTable = EMPTY_ROUTE_TABLE;
  if (config.routesFile !== undefined) {
    try {
      routes = loadRouteTable(config.routesFile);
      checkRouteTable(routes, { userTokens: config.jwt !== undefined, permissionExists: () => true });
    } catch (error) {
      throw routesError(error);
    }
  }
  const security = createTransportSecurity(config.tls);
  const consoleSite = config.console ? loadConsole() : undefined;
  if (openWarning) logger.warn(openWarning);
  const certificate = security.certificate;
  if (certificate) {
    const now = Date.now();
    // Not a refusal: a restart must not turn a certificate problem into an outage of a running fleet.
    if (now > certificate.validTo.getTime() || now < certificate.validFrom.getTime()) {
      logger.warn(
        { subject: certificate.subject, validFrom: certificate.validFrom, validTo: certificate.validTo },
        "the TLS certificate in AUTHZ_TLS_CERT_FILE is not valid now: clients will refuse the handshake",
      );
    }
  }
  return { authenticator, security, routes, consoleSite };
}

type Prepared = ReturnType<typeof prepare>;

/** Whether the route table names only permissions `reader`'s catalog knows (throws RouteTableError). */
async function checkRoutePermissions(
  config: Config,
  routes: RouteTable,
  reader: CachedReader,
): Promise<void> {
  const { index } = await reader.catalog(CACHED);
  checkRouteTable(routes, {
    userTokens: config.jwt !== undefined,
    permissionExists: (ref) => index.resolvePermission(ref) !== undefined,
  });
}

/** The decision for guarded HTTP requests (ext_authz, /forward-auth), from the same caches as checks. */
function routeGuard({ authenticator, routes }: Prepared, authz: AuthzQueries, logger: Logger): RouteGuard {
  return createRouteGuard({
    routes,
    verifyUser: (authorization) => authenticator.verifyUser(authorization),
    holds: (userId, permission) => authz.holds(userId, permission, CACHED),
    verifyUserNow: (authorization) => authenticator.verifyUserNow(authorization),
    holdsNow: (userId, permission) => authz.holdsNow(userId, permission),
    onError: (error) => logger.warn({ err: error }, "a route decision failed: denied (fail closed)"),
  });
}

/** Both listeners for `impl`; on failure, `closeData` runs before the error propagates. */
async function listen(
  config: Config,
  logger: Logger,
  { authenticator, security, consoleSite }: Prepared,
  impl: ServiceImpl<typeof AuthzService>,

  guard: RouteGuard,
  reader: CachedReader,
  closeData: () => Promise<void>,
  tracing: Tracing | undefined,
): Promise<{ servers: RunningServers; health: HealthState }> {
  const health = createHealthState([AuthzService.typeName]);
  const metrics = createRpcMetrics();
  registerCacheMetrics(metrics.registry, reader);
  const servers = await startServers({
    service: AuthzService,
    impl,
    health,
    logger,
    metrics,
    accessLog: config.accessLog,
    guard,
    ...(tracing && { tracer: tracing.calls }),
    grpc: {
      host: config.grpcListen.host,
      port: config.grpcListen.port,
      credentials: security.grpc,
      maxReceiveMessageBytes: config.maxRequestBytes,
    },
    http: {
      host: config.httpListen.host,
      port: config.httpListen.port,
      readMaxBytes: config.maxRequestBytes,
      ...(security.https && { tls: security.https }),
      browserPolicy: createBrowserPolicy({
        // Open mode answers whoever reaches it, so it must know who that is; with credentials, a rebinding
        // page has no token to send, and the check is on when names are listed.
        checkHost: authenticator.mode === "open" || config.allowedHosts.length > 0,
        allowedHosts: config.allowedHosts,
        corsOrigins: config.corsOrigins,
        listenHost: config.httpListen.host,
        tls: security.https !== undefined,
      }),
      changesState: (method) =>
        method.parent.typeName === AuthzService.typeName && WRITE_METHODS.has(method.name),
      ...(consoleSite && { console: consoleSite }),
    },
  }).catch(async (error: unknown) => {
    await closeData().catch(() => {});
    throw error;
  });
  return { servers, health };
}

function listening(config: Config, servers: RunningServers, { security, routes, authenticator }: Prepared) {
  const certificate = security.certificate;
  return {
    grpc: `${config.grpcListen.host}:${servers.grpcPort}`,
    http: `${config.httpListen.host}:${servers.httpPort}`,
    auth: authenticator.mode,
    routes: config.routesFile === undefined ? "none" : `${routes.routes.length} from ${config.routesFile}`,
    tls: config.tls ? (config.tls.clientCaFile ? "mutual" : "server") : "off",
    ...(certificate && { certificate: { subject: certificate.subject, validTo: certificate.validTo } }),
  };
}

export async function startApp(config: Config, logger: Logger): Promise<App> {
  if (config.upstream) throw new Error("AUTHZ_UPSTREAM is set: start a follower with startFollower");
  const prepared = prepare(config, logger);
  const { authenticator } = prepared;

  const tracing = await startTracing(config.tracing, logger);
  let store: Store;
  try {
    store = await openStore(config.database, { migrate: config.migrateOnStart, logger });
  } catch (error) {
    await tracing?.shutdown().catch(() => {});
    throw error;
  }
  // What calls use: with tracing on, each store method a call reaches gets a span of its own.
  const called = tracing ? tracing.traceStore(store, config.database) : store;
  const hub = new ChangeHub(store);
  const reader = new CachedReader(called, createDirectReader(called), {
    userCacheSize: config.userCacheSize,
    onError: (error, context) => logger.warn({ err: error }, context),
  });
  /** Closes what the listeners stand on, in order; on a failed start, errors are beside the point. */
  const closeData = async () => {
    await reader.close();
    await hub.close();
    await store.close();
    await tracing?.shutdown();
  };
  try {
    await hub.start();
    await reader.start(hub);
    // Permissions can only be looked up now: an unknown one is a start error (later removals deny).
    await checkRoutePermissions(config, prepared.routes, reader);
  } catch (error) {
    await closeData().catch(() => {});
    throw routesError(error);
  }
  const authz = new Authz({ store: called, reader, hub, maxBatch: config.maxBatch });
  const impl = createAuthzService(authz, createGuard(authenticator, authz));
  const guard = routeGuard(prepared, authz, logger);
  const { servers, health } = await listen(config, logger, prepared, impl, guard, reader, closeData, tracing);
  const feedLag = registerFeedLag(servers.metrics.registry, reader);
  const readRevision = () =>
    store.currentRevision().then(
      (revision) => feedLag.observe(revision),
      () => {},
    );
  void readRevision();

  // SERVING only while the database answers and the caches follow the change feed.
  let stopping = false;
  let databaseUp = true;
  const updateHealth = () => {
    if (stopping) return;
    health.setAll(databaseUp && reader.live ? "SERVING" : "NOT_SERVING");
  };
  if (hub.degraded !== undefined) health.warn(CHANGE_FEED, hub.degraded);
  const detachLive = reader.onLiveChange(updateHealth);
  const pinger = setInterval(() => {
    store.ping().then(
      () => {
        databaseUp = true;
        updateHealth();
        // The change feed's lag on /metrics is measured against this reading.
        void readRevision();
      },
      (error: unknown) => {
        if (databaseUp) logger.warn({ err: error }, "the database does not answer");
        databaseUp = false;
        updateHealth();
      },
    );
  }, PING_INTERVAL_MS);
  pinger.unref();
  updateHealth();

  const prune = () => {
    store.pruneChanges(new Date(Date.now() - CHANGE_LOG_RETENTION_MS)).then(
      (deleted) => {
        if (deleted > 0) logger.info({ deleted }, "pruned the change log");
      },
      (error: unknown) => logger.warn({ err: error }, "pruning the change log failed; retrying later"),
    );
  };
  // Jittered, so replicas started together do not prune in lockstep.
  const firstPrune = setTimeout(prune, FIRST_PRUNE_DELAY_MS * (0.5 + Math.random()));
  firstPrune.unref();
  const pruner = setInterval(prune, PRUNE_INTERVAL_MS);
  pruner.unref();

  logger.info(
    {
      ...listening(config, servers, prepared),
      database: redactDatabase(config.database),
    },
    "flip-authz listening",
  );

  let closing: Promise<void> | undefined;
  return {
    grpcPort: servers.grpcPort,
    httpPort: servers.httpPort,
    store,
    authz,
    reader,
    health,
    shutdown() {
      closing ??= (async () => {
        stopping = true;
        clearInterval(pinger);
        clearTimeout(firstPrune);
        clearInterval(pruner);
        detachLive();
        await servers.shutdown(config.shutdownGraceMs);
        await closeData();
      })();
      return closing;
    },
  };
}

/** Retries of the first sync with the upstream grow to this. */
const MAX_SYNC_BACKOFF_MS = 5000;

/**
 * A follower (SIDECARS.md §5): no database; the caches are filled from `config.upstream` and kept right by
 * its change stream; writes, the audit log and WatchChanges are forwarded. The listeners start even when the
 * upstream cannot be reached: health is NOT_SERVING until the first sync, which is retried until it works.
 */
export async function startFollower(config: Config, logger: Logger): Promise<FollowerApp> {
  const upstreamConfig = config.upstream;
  if (!upstreamConfig) throw new Error("startFollower needs AUTHZ_UPSTREAM");
  const prepared = prepare(config, logger);
  const { authenticator } = prepared;
  const tracing = await startTracing(config.tracing, logger);
  const upstream = openUpstream(upstreamConfig, logger, tracing?.upstream(upstreamConfig));
  const { source } = upstream;
  const hub = new ChangeHub(source);
  const reader = new CachedReader(source, createDirectReader(source), {
    userCacheSize: config.userCacheSize,
    onError: (error, context) => logger.warn({ err: error }, context),
  });
  const stop = new AbortController();
  let syncing: Promise<void> = Promise.resolve();
  const closeData = async () => {
    stop.abort();
    await reader.close();
    await syncing;
    await hub.close();
    upstream.close();
    await tracing?.shutdown();
  };
  const authz = new AuthzQueries({ reader, maxBatch: config.maxBatch });
  const impl = createFollowerService(authz, createGuard(authenticator, authz), upstream.forwarded);
  const guard = routeGuard(prepared, authz, logger);
  const { servers, health } = await listen(config, logger, prepared, impl, guard, reader, closeData, tracing);

  let stopping = false;
  const updateHealth = () => {
    if (!stopping) health.setAll(reader.live ? "SERVING" : "NOT_SERVING");
  };
  const detachLive = reader.onLiveChange(updateHealth);
  updateHealth();

  // Until the first sync, every read asks the upstream (the reader is not live).
  syncing = (async () => {
    let hubStarted = false;
    for (let attempt = 0; !stop.signal.aborted; attempt++) {
      try {
        if (!hubStarted) {
          await hub.start();
          hubStarted = true;
        }
        await reader.start(hub);
        logger.info(
          { upstream: upstreamConfig.target, revision: reader.appliedRevision },
          "synced with the upstream",
        );
        // A database-backed process refuses to start on a route naming an unknown permission; a follower
        // learns the permissions only now, with its listeners up: it says so, and that route denies.
        await checkRoutePermissions(config, prepared.routes, reader).catch((error: unknown) => {
          logger.error(
            { err: routesError(error) },
            "AUTHZ_ROUTES_FILE: a route names a permission the upstream does not know; it denies",
          );
        });
        return;
      } catch (error) {
        if (stop.signal.aborted) return;
        logger.warn(
          { err: error, upstream: upstreamConfig.target, attempt },
          "the first sync with the upstream failed; retrying (NOT_SERVING meanwhile)",
        );
        const delay = Math.min(MAX_SYNC_BACKOFF_MS, 100 * 2 ** attempt) * (0.5 + Math.random() / 2);
        await sleep(delay, undefined, { signal: stop.signal }).catch(() => {});
      }
    }
  })();

  logger.info(
    {
      ...listening(config, servers, prepared),
      upstream: upstreamConfig.target,
      upstreamTls: upstreamConfig.tls ? (upstreamConfig.tls.certFile ? "mutual" : "server") : "off",
      maxStalenessMs: upstreamConfig.maxStalenessMs,
    },
    "flip-authz follower listening",
  );

  let closing: Promise<void> | undefined;
  return {
    grpcPort: servers.grpcPort,
    httpPort: servers.httpPort,
    source,
    authz,
    reader,
    health,
    shutdown() {
      closing ??= (async () => {
        stopping = true;
        detachLive();
        await servers.shutdown(config.shutdownGraceMs);
        await closeData();
      })();
      return closing;
    },
  };
}
