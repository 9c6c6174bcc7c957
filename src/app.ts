// The composition root: builds the store, the change hub, the cached reader, the domain, the service and
// both listeners from a Config, and takes them down again in order. Tests start it on port 0.

import { AuthzService } from "../gen/flip/authz/v1/authz_pb.ts";
import { assertStartAllowed, createAuthenticator } from "./auth/authenticator.ts";
import { WRITE_METHODS } from "./auth/rules.ts";
import { Authz } from "./authz/authz.ts";
import { CachedReader } from "./authz/cached-reader.ts";
import { ChangeHub } from "./authz/change-hub.ts";
import { CACHED, createDirectReader } from "./authz/reader.ts";
import type { Store } from "./authz/store.ts";
import { type Config, ConfigError, redactDatabase } from "./config.ts";
import { createRouteGuard } from "./guard/decide.ts";
import {
  checkRouteTable,
  EMPTY_ROUTE_TABLE,
  loadRouteTable,
  type RouteTable,
  RouteTableError,
} from "./guard/routes.ts";
import type { Logger } from "./logger.ts";
import { createGuard } from "./rpc/guard.ts";
import { createAuthzService } from "./rpc/service.ts";
import { createBrowserPolicy } from "./server/browser-policy.ts";
import { registerCacheMetrics } from "./server/cache-metrics.ts";
import { createHealthState, type HealthState } from "./server/health.ts";
import { startServers } from "./server/listen.ts";
import { createRpcMetrics } from "./server/metrics.ts";
import { createTransportSecurity } from "./server/security.ts";
import { openStore } from "./store/index.ts";

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

export async function startApp(config: Config, logger: Logger): Promise<App> {
  // Everything that can refuse the start is checked before anything is opened.
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

  const store = await openStore(config.database, { migrate: config.migrateOnStart, logger });
  const hub = new ChangeHub(store);
  const reader = new CachedReader(store, createDirectReader(store), {
    userCacheSize: config.userCacheSize,
    onError: (error, context) => logger.warn({ err: error }, context),
  });
  /** Closes what the listeners stand on, in order; on a failed start, errors are beside the point. */
  const closeData = async () => {
    await reader.close();
    await hub.close();
    await store.close();
  };
  try {
    await hub.start();
    await reader.start(hub);
    // Permissions can only be looked up now: an unknown one is a start error (later removals deny).
    const { index } = await reader.catalog(CACHED);
    checkRouteTable(routes, {
      userTokens: config.jwt !== undefined,
      permissionExists: (ref) => index.resolvePermission(ref) !== undefined,
    });
  } catch (error) {
    await closeData().catch(() => {});
    throw routesError(error);
  }
  const authz = new Authz({ store, reader, hub, maxBatch: config.maxBatch });
  const impl = createAuthzService(authz, createGuard(authenticator, authz));
  const guard = createRouteGuard({
    routes,
    verifyUser: (authorization) => authenticator.verifyUser(authorization),
    holds: (userId, permission) => authz.holds(userId, permission, CACHED),
    onError: (error) => logger.warn({ err: error }, "a route decision failed: denied (fail closed)"),
  });

  const health = createHealthState([AuthzService.typeName]);
  const metrics = createRpcMetrics();
  registerCacheMetrics(metrics.registry, reader);
  const servers = await startServers({
    service: AuthzService,
    impl,
    health,
    logger,
    metrics,
    guard,
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
    },
  }).catch(async (error: unknown) => {
    await closeData().catch(() => {});
    throw error;
  });

  // SERVING only while the database answers and the caches follow the change feed.
  let stopping = false;
  let databaseUp = true;
  const updateHealth = () => {
    if (stopping) return;
    health.setAll(databaseUp && reader.live ? "SERVING" : "NOT_SERVING");
  };
  const detachLive = reader.onLiveChange(updateHealth);
  const pinger = setInterval(() => {
    store.ping().then(
      () => {
        databaseUp = true;
        updateHealth();
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
      grpc: `${config.grpcListen.host}:${servers.grpcPort}`,
      http: `${config.httpListen.host}:${servers.httpPort}`,
      database: redactDatabase(config.database),
      auth: authenticator.mode,
      routes: config.routesFile === undefined ? "none" : `${routes.routes.length} from ${config.routesFile}`,
      tls: config.tls ? (config.tls.clientCaFile ? "mutual" : "server") : "off",
      ...(certificate && { certificate: { subject: certificate.subject, validTo: certificate.validTo } }),
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
