// Starts both listeners for one service (gRPC on grpc-js; Connect + gRPC-Web + operator endpoints on
// node:http) and shuts them down gracefully: NOT_SERVING first, stop accepting, drain, then force-close.

import { once } from "node:events";
import type { Server as HttpServer, IncomingMessage } from "node:http";
import type { ServerOptions as HttpsOptions, Server as HttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import type { ContextValues, Interceptor, ServiceImpl } from "@connectrpc/connect";
import type * as grpc from "@grpc/grpc-js";
import { Authorization } from "../../gen/envoy/service/auth/v3/external_auth_pb.ts";
import { Health } from "../../gen/grpc/health/v1/health_pb.ts";
import type { RouteGuard } from "../guard/decide.ts";
import { type CallTracer, withCallSpans } from "../tracing/call-span.ts";
import { withAccessLog } from "./access-log.ts";
import type { BrowserPolicy } from "./browser-policy.ts";
import type { ConsoleSite } from "./console.ts";
import { addExtAuthzService } from "./ext-authz.ts";
import { createForwardAuthHandler } from "./forward-auth.ts";
import {
  addGrpcService,
  bindGrpcServer,
  createGrpcServer,
  forceShutdownGrpcServer,
  type GrpcServerCall,
} from "./grpc.ts";
import { addHealthService, type HealthState } from "./health.ts";
import { createHttpServer } from "./http.ts";
import { createRpcMetrics, type RpcMetrics, registerServing } from "./metrics.ts";
import type { ServerLogger } from "./outcome.ts";
import { addReflectionService, REFLECTION_SERVICES } from "./reflection.ts";

export interface ServersOptions<S extends DescService> {
  service: S;
  impl: Partial<ServiceImpl<S>>;
  /** Create with createHealthState([service.typeName]); the app sets SERVING when ready. */
  health: HealthState;
  logger: ServerLogger;
  /** Defaults to createRpcMetrics() (a fresh registry with Node's default metrics). */
  metrics?: RpcMetrics;
  /** One info line per call (AUTHZ_ACCESS_LOG); default false. */
  accessLog?: boolean;
  /** Connect interceptors for the service on both listeners (not for health or reflection). */
  interceptors?: Interceptor[];
  /**
   * The route guard: served as Envoy's ext_authz Check on the gRPC listener and as /forward-auth and
   * /ext-authz/… on the HTTP listener, without credentials of their own (SIDECARS.md §3, §4).
   */
  guard?: RouteGuard;
  /** With tracing on: server spans for the service's RPCs, Envoy's Check and forward auth on both listeners. */
  tracer?: CallTracer;
  grpc: {
    host: string;
    /** 0 picks a free port; the bound one is in RunningServers.grpcPort. */
    port: number;
    /** Default insecure (h2c). */
    credentials?: grpc.ServerCredentials;
    /** Default 1 MiB; larger requests get RESOURCE_EXHAUSTED. */
    maxReceiveMessageBytes?: number;
    channelOptions?: grpc.ServerOptions;
    /** ctx.values for each call of the service, from the grpc-js call (peer, TLS auth context). */
    contextValues?: (call: GrpcServerCall) => ContextValues;
  };
  http: {
    host: string;
    port: number;
    /** Default 1 MiB. */
    readMaxBytes?: number;
    /** ctx.values for each call of the service, from the node request. */
    contextValues?: (request: IncomingMessage) => ContextValues;
    /** HTTPS options (cert, key, optional client CA); cleartext HTTP when absent. */
    tls?: HttpsOptions;
    /** Host, Origin and CORS rules for browsers; none when absent. */
    browserPolicy?: BrowserPolicy;
    /** Which of the service's methods change state (refused from an untrusted web Origin). */
    changesState?: (method: DescMethod) => boolean;
    /** The web console at /console/; absent: not served. */
    console?: ConsoleSite;
  };
}

export interface RunningServers {
  grpcPort: number;
  httpPort: number;
  grpcServer: grpc.Server;
  httpServer: HttpServer | HttpsServer;
  metrics: RpcMetrics;
  /**
   * Health NOT_SERVING, stop accepting, let in-flight unary calls finish within `graceMs`, end open
   * streams with UNAVAILABLE, then force-close whatever is left. Resolves when both listeners are closed.
   * Safe to call more than once (later calls wait for the first).
   */
  shutdown(graceMs: number): Promise<void>;
}

export async function startServers<S extends DescService>(
  options: ServersOptions<S>,
): Promise<RunningServers> {
  const { logger, health } = options;
  const metrics = options.metrics ?? createRpcMetrics();
  registerServing(metrics.registry, health);
  const streams = new AbortController(); // drain started: streams end
  const force = new AbortController(); // grace over: everything ends

  const grpcServer = createGrpcServer({
    maxReceiveMessageBytes: options.grpc.maxReceiveMessageBytes,
    channelOptions: options.grpc.channelOptions,
  });
  const logged = options.accessLog ? withAccessLog(metrics, logger) : metrics;
  const { tracer } = options;
  const calls = tracer ? withCallSpans(logged) : logged;
  const common = { logger, calls, shutdownSignal: streams.signal };
  addGrpcService(grpcServer, options.service, options.impl, {
    ...common,
    interceptors: options.interceptors,
    tracer,
  });
  addHealthService(grpcServer, health, common);
  const guard = options.guard;
  if (guard) addExtAuthzService(grpcServer, guard, { onDecision: metrics.decision, calls, logger, tracer });
  addReflectionService(
    grpcServer,
    [options.service, Health, ...(guard ? [Authorization] : []), ...REFLECTION_SERVICES],
    common,
  );

  const httpServer = createHttpServer({
    service: options.service,
    impl: options.impl,
    health,
    metrics,
    calls,
    logger,
    interceptors: options.interceptors,
    readMaxBytes: options.http.readMaxBytes,
    contextValues: options.http.contextValues,
    tls: options.http.tls,
    browserPolicy: options.http.browserPolicy,
    changesState: options.http.changesState,
    ...(guard && { forwardAuth: createForwardAuthHandler(guard, metrics.decision, tracer) }),
    console: options.http.console,
    tracer,
    shutdownSignal: force.signal,
    streamShutdownSignal: streams.signal,
  });

  let grpcPort: number;
  try {
    grpcPort = await bindGrpcServer(
      grpcServer,
      options.grpc.host,
      options.grpc.port,
      options.grpc.credentials,
    );
  } catch (error) {
    forceShutdownGrpcServer(grpcServer);
    throw error;
  }
  try {
    httpServer.listen(options.http.port, options.http.host);
    await once(httpServer, "listening");
  } catch (error) {
    forceShutdownGrpcServer(grpcServer);
    throw error;
  }
  const httpPort = (httpServer.address() as AddressInfo).port;

  let stopping: Promise<void> | undefined;
  const shutdown = (graceMs: number): Promise<void> => {
    stopping ??= (async () => {
      health.setAll("NOT_SERVING");
      // Let health watchers receive NOT_SERVING before their streams end.
      await new Promise((resolve) => setTimeout(resolve, 20));
      streams.abort();

      const grpcClosed = new Promise<void>((resolve) => grpcServer.tryShutdown(() => resolve()));
      const httpClosed = new Promise<void>((resolve) => httpServer.close(() => resolve()));
      httpServer.closeIdleConnections();
      // Keep-alive connections that finish a request during the drain are closed as they go idle.
      const idle = setInterval(() => httpServer.closeIdleConnections(), 50);
      let timer: NodeJS.Timeout | undefined;
      const expired = new Promise<"expired">((resolve) => {
        timer = setTimeout(() => resolve("expired"), graceMs);
      });
      const result = await Promise.race([Promise.all([grpcClosed, httpClosed]), expired]);
      clearTimeout(timer);
      if (result === "expired") {
        logger.warn({ graceMs }, "shutdown grace period over: closing the calls still open");
        force.abort();
        forceShutdownGrpcServer(grpcServer);
        httpServer.closeAllConnections();
        // Returns with grpc-js shut down; its tryShutdown callback need not fire after it.
        await httpClosed;
      }
      clearInterval(idle);
    })();
    return stopping;
  };

  return { grpcPort, httpPort, grpcServer, httpServer, metrics, shutdown };
}
