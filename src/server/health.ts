// Serving status of the process and its services: a small HealthState the app updates, and the standard
// grpc.health.v1.Health service (Check, List, Watch) that reports it. Never authenticated.

import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";
import type * as grpc from "@grpc/grpc-js";
import { Health, HealthCheckResponse_ServingStatus } from "../../gen/grpc/health/v1/health_pb.ts";
import { addGrpcService, type GrpcServiceOptions } from "./grpc.ts";

export type ServingStatus = "SERVING" | "NOT_SERVING";

/** The overall status of the server, as health checks name it. */
export const OVERALL = "";
/** Listed by gRPC health as NOT_SERVING while the change feed polls because LISTEN does not work. */
export const CHANGE_FEED = "flip-authz.change-feed";

/**
 * The statuses health checks report. Known services are fixed at creation and start NOT_SERVING; the app
 * sets SERVING once the database is reachable and caches are loaded, and NOT_SERVING when shutdown starts.
 */
export interface HealthState {
  get(service: string): ServingStatus | undefined;
  set(service: string, status: ServingStatus): void;
  /** Sets every known service (overall included). */
  setAll(status: ServingStatus): void;
  /** True when the overall status is SERVING (what /readyz answers). */
  isServing(): boolean;
  services(): string[];
  /**
   * Records a problem that does not stop serving but that an operator should see: gRPC health lists
   * `service` as NOT_SERVING (the overall status is unaffected) and `/readyz` prints `message`.
   */
  warn(service: string, message: string): void;
  /** The messages of `warn`, in order. */
  warnings(): string[];
  /** Resolves at the first change after `version`, or at once if there was one already; false on abort. */
  changed(version: number, signal: AbortSignal): Promise<boolean>;
  readonly version: number;
}

export function createHealthState(services: string[] = []): HealthState {
  const statuses = new Map<string, ServingStatus>([[OVERALL, "NOT_SERVING"]]);
  for (const service of services) statuses.set(service, "NOT_SERVING");
  const warnings = new Map<string, string>();
  const waiters = new Set<() => void>();
  let version = 0;
  const bump = () => {
    version++;
    for (const wake of [...waiters]) wake();
  };
  return {
    get: (service) => (warnings.has(service) ? "NOT_SERVING" : statuses.get(service)),
    set(service, status) {
      if (!statuses.has(service)) throw new Error(`health: unknown service ${JSON.stringify(service)}`);
      if (statuses.get(service) === status) return;
      statuses.set(service, status);
      bump();
    },
    setAll(status) {
      let changed = false;
      for (const service of statuses.keys()) {
        if (statuses.get(service) !== status) changed = true;
        statuses.set(service, status);
      }
      if (changed) bump();
    },
    isServing: () => statuses.get(OVERALL) === "SERVING",
    services: () => [...new Set([...statuses.keys(), ...warnings.keys()])],
    warn(service, message) {
      if (warnings.get(service) === message) return;
      warnings.set(service, message);
      bump();
    },
    warnings: () => [...warnings.values()],
    get version() {
      return version;
    },
    changed(since, signal) {
      if (version !== since) return Promise.resolve(true);
      if (signal.aborted) return Promise.resolve(false);
      return new Promise((resolve) => {
        const finish = (result: boolean) => {
          waiters.delete(wake);
          signal.removeEventListener("abort", onAbort);
          resolve(result);
        };
        const wake = () => finish(true);
        const onAbort = () => finish(false);
        waiters.add(wake);
        signal.addEventListener("abort", onAbort, { once: true });
      });
    },
  };
}

function toProto(status: ServingStatus | undefined): HealthCheckResponse_ServingStatus {
  if (status === undefined) return HealthCheckResponse_ServingStatus.SERVICE_UNKNOWN;
  return status === "SERVING"
    ? HealthCheckResponse_ServingStatus.SERVING
    : HealthCheckResponse_ServingStatus.NOT_SERVING;
}

/** The grpc.health.v1.Health implementation over a HealthState. */
export function createHealthService(state: HealthState): ServiceImpl<typeof Health> {
  return {
    check(request) {
      const status = state.get(request.service);
      if (status === undefined) throw new ConnectError(`unknown service ${request.service}`, Code.NotFound);
      return { status: toProto(status) };
    },
    list() {
      const statuses: Record<string, { status: HealthCheckResponse_ServingStatus }> = {};
      for (const service of state.services()) statuses[service] = { status: toProto(state.get(service)) };
      return { statuses };
    },
    async *watch(request, context: HandlerContext) {
      let last: HealthCheckResponse_ServingStatus | undefined;
      for (;;) {
        const version = state.version;
        const status = toProto(state.get(request.service));
        if (status !== last) {
          last = status;
          yield { status };
        }
        if (!(await state.changed(version, context.signal))) return;
      }
    },
  };
}

/** Serves grpc.health.v1.Health on a grpc-js server, without interceptors (health is never authenticated). */
export function addHealthService(
  server: grpc.Server,
  state: HealthState,
  options: Omit<GrpcServiceOptions, "interceptors">,
): void {
  addGrpcService(server, Health, createHealthService(state), options);
}
