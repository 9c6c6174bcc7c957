// The AuthzService implementation, written once and served by both transports (src/server/). Each handler
// asks the guard who may make the call, translates proto → domain, calls the domain, and translates back;
// domain errors become statuses in one wrapper around them all.

import type { DescMethod } from "@bufbuild/protobuf";
import { ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { AuthzService } from "../../gen/flip/authz/v1/authz_pb.ts";
import type { RpcMethod } from "../auth/rules.ts";
import type { Authz, AuthzQueries } from "../authz/authz.ts";
import {
  auditEventMessage,
  changeMessage,
  checkResponse,
  permissionMessage,
  profileMessage,
  roleMessage,
} from "./convert.ts";
import { toConnectError } from "./errors.ts";

/**
 * Decides whether the caller behind `ctx` may call `method` about `subjects` (the user ids the request
 * names), and returns the actor to record as modified_by_user_id: at once when no look-up is needed,
 * else as a promise. Throws (or rejects with) Unauthenticated/PermissionDenied.
 */
export type Guard = (
  ctx: HandlerContext,
  method: RpcMethod,
  subjects: readonly string[],
) => string | Promise<string>;

/** The RPCs a follower answers itself; it forwards the others to its upstream. */
type QueryMethods = "checkPermission" | "checkPermissions" | "getProfile" | "listRoles" | "listPermissions";
type ForwardedMethods = Exclude<keyof ServiceImpl<typeof AuthzService>, QueryMethods>;
export type ForwardedHandlers = Pick<ServiceImpl<typeof AuthzService>, ForwardedMethods>;

/** Every RPC answered here: the database-backed service. */
export function createAuthzService(authz: Authz, guard: Guard): ServiceImpl<typeof AuthzService> {
  return mapErrors({ ...queryHandlers(authz, guard), ...storeHandlers(authz, guard) });
}

/** A follower's service: reads answered here (from its caches), everything else by `forwarded`. */
export function createFollowerService(
  queries: AuthzQueries,
  guard: Guard,
  forwarded: ForwardedHandlers,
): ServiceImpl<typeof AuthzService> {
  return { ...mapErrors(queryHandlers(queries, guard)), ...forwarded };
}

function queryHandlers(
  authz: AuthzQueries,
  guard: Guard,
): Pick<ServiceImpl<typeof AuthzService>, QueryMethods> {
  return {
    checkPermission(req, ctx) {
      // A sidecar's cached check is answered without a promise (each costs allocations and a turn of the
      // event loop, a real share of a call this cheap); anything that must wait takes the async path.
      const actor = guard(ctx, "CheckPermission", [req.userId]);
      const answer = typeof actor === "string" ? authz.checkPermissionNow(req) : undefined;
      if (answer !== undefined) return checkResponse(answer);
      return (async () => {
        await actor;
        return checkResponse(await authz.checkPermission(req));
      })();
    },
    async checkPermissions(req, ctx) {
      await guard(
        ctx,
        "CheckPermissions",
        req.checks.map((check) => check.userId),
      );
      return { results: (await authz.checkPermissions(req.checks)).map(checkResponse) };
    },
    async getProfile(req, ctx) {
      await guard(ctx, "GetProfile", [req.userId]);
      const { profile, revision } = await authz.getProfile(req.userId, req.atLeastAsFresh);
      return { profile: profileMessage(profile), readAt: revision };
    },
    async listRoles(req, ctx) {
      await guard(ctx, "ListRoles", []);
      const { roles, readAt } = await authz.listRoles(req.atLeastAsFresh);
      return { roles: roles.map(roleMessage), readAt };
    },
    async listPermissions(req, ctx) {
      await guard(ctx, "ListPermissions", []);
      const { permissions, readAt } = await authz.listPermissions(req.atLeastAsFresh);
      return { permissions: permissions.map(permissionMessage), readAt };
    },
  };
}

function storeHandlers(authz: Authz, guard: Guard): ForwardedHandlers {
  return {
    async assignRole(req, ctx) {
      const actor = await guard(ctx, "AssignRole", [req.userId]);
      return authz.assignRole(req.userId, req.role, actor);
    },
    async revokeRole(req, ctx) {
      const actor = await guard(ctx, "RevokeRole", [req.userId]);
      return authz.revokeRole(req.userId, req.role, actor);
    },
    async setUserRoles(req, ctx) {
      const actor = await guard(ctx, "SetUserRoles", [req.userId]);
      return authz.setUserRoles(req.userId, req.roles, actor);
    },
    async updateProfile(req, ctx) {
      const actor = await guard(ctx, "UpdateProfile", [req.userId]);
      const { profile, revision } = await authz.updateProfile(
        req.userId,
        { name: req.name, organisation: req.organisation },
        actor,
      );
      return { profile: profileMessage(profile), writtenAt: revision };
    },
    async listAuditEvents(req, ctx) {
      await guard(ctx, "ListAuditEvents", req.userId === "" ? [] : [req.userId]);
      const page = await authz.listAuditEvents(req);
      return { events: page.events.map(auditEventMessage), nextPageToken: page.nextPageToken };
    },
    async *watchChanges(req, ctx) {
      await guard(ctx, "WatchChanges", []);
      try {
        for await (const change of authz.watchChanges(req.after, ctx.signal)) {
          // Rights can end while a stream is open (a token expires, the watcher's role is revoked): no
          // change goes out without the caller being allowed it now. The check is served from memory.
          await guard(ctx, "WatchChanges", []);
          yield changeMessage(change);
        }
      } catch (error) {
        if (!ctx.signal.aborted) throw error;
      }
      // The stream stops when its signal fires; end with why (deadline exceeded, cancelled, shutting down),
      // not with OK, which would tell the client it saw everything.
      if (ctx.signal.aborted && ctx.signal.reason instanceof ConnectError) throw ctx.signal.reason;
    },
  };
}

type Handler = (req: never, ctx: HandlerContext) => unknown;

function rethrowMapped(error: unknown): never {
  throw toConnectError(error);
}

/** Every handler, its domain errors turned into statuses (errors.ts); streams too, mid-stream. */
function mapErrors<T extends Partial<ServiceImpl<typeof AuthzService>>>(impl: T): T {
  const handlers = impl as unknown as Record<string, Handler>;
  const wrapped: Record<string, Handler> = {};
  for (const method of AuthzService.methods as DescMethod[]) {
    const handler = handlers[method.localName];
    if (!handler) continue;
    wrapped[method.localName] =
      method.methodKind === "server_streaming"
        ? async function* (req, ctx) {
            try {
              yield* handler(req, ctx) as AsyncIterable<unknown>;
            } catch (error) {
              throw toConnectError(error);
            }
          }
        : (req, ctx) => {
            // A handler may answer at once (checkPermission's cached path) or with a promise.
            let result: unknown;
            try {
              result = handler(req, ctx);
            } catch (error) {
              throw toConnectError(error);
            }
            return result instanceof Promise ? result.catch(rethrowMapped) : result;
          };
  }
  return wrapped as unknown as T;
}
