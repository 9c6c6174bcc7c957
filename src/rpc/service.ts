// The AuthzService implementation, written once and served by both transports (src/server/). Each handler
// asks the guard who may make the call, translates proto → domain, calls the domain, and translates back.

import { ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { AuthzService } from "../../gen/flip/authz/v1/authz_pb.ts";
import type { RpcMethod } from "../auth/rules.ts";
import type { Authz } from "../authz/authz.ts";
import {
  auditEventMessage,
  changeMessage,
  checkResponse,
  permissionMessage,
  profileMessage,
  roleMessage,
} from "./convert.ts";
import { type ErrorLogger, toConnectError } from "./errors.ts";

/**
 * Decides whether the caller behind `ctx` may call `method` about `subjects` (the user ids the request
 * names), and returns the actor to record as modified_by_user_id. Throws Unauthenticated/PermissionDenied.
 */
export type Guard = (ctx: HandlerContext, method: RpcMethod, subjects: readonly string[]) => Promise<string>;

export function createAuthzService(
  authz: Authz,
  guard: Guard,
  logger: ErrorLogger,
): ServiceImpl<typeof AuthzService> {
  const fail = (method: string) => (error: unknown) => {
    throw toConnectError(error, logger, method);
  };
  return {
    async checkPermission(req, ctx) {
      try {
        await guard(ctx, "CheckPermission", [req.userId]);
        return checkResponse(await authz.checkPermission(req));
      } catch (error) {
        return fail("CheckPermission")(error);
      }
    },
    async checkPermissions(req, ctx) {
      try {
        await guard(
          ctx,
          "CheckPermissions",
          req.checks.map((check) => check.userId),
        );
        const results = await authz.checkPermissions(req.checks);
        return { results: results.map(checkResponse) };
      } catch (error) {
        return fail("CheckPermissions")(error);
      }
    },
    async assignRole(req, ctx) {
      try {
        const actor = await guard(ctx, "AssignRole", [req.userId]);
        return await authz.assignRole(req.userId, req.role, actor);
      } catch (error) {
        return fail("AssignRole")(error);
      }
    },
    async revokeRole(req, ctx) {
      try {
        const actor = await guard(ctx, "RevokeRole", [req.userId]);
        return await authz.revokeRole(req.userId, req.role, actor);
      } catch (error) {
        return fail("RevokeRole")(error);
      }
    },
    async setUserRoles(req, ctx) {
      try {
        const actor = await guard(ctx, "SetUserRoles", [req.userId]);
        return await authz.setUserRoles(req.userId, req.roles, actor);
      } catch (error) {
        return fail("SetUserRoles")(error);
      }
    },
    async getProfile(req, ctx) {
      try {
        await guard(ctx, "GetProfile", [req.userId]);
        return { profile: profileMessage(await authz.getProfile(req.userId)) };
      } catch (error) {
        return fail("GetProfile")(error);
      }
    },
    async updateProfile(req, ctx) {
      try {
        const actor = await guard(ctx, "UpdateProfile", [req.userId]);
        const profile = await authz.updateProfile(
          req.userId,
          { name: req.name, organisation: req.organisation },
          actor,
        );
        return { profile: profileMessage(profile) };
      } catch (error) {
        return fail("UpdateProfile")(error);
      }
    },
    async listRoles(_req, ctx) {
      try {
        await guard(ctx, "ListRoles", []);
        return { roles: (await authz.listRoles()).map(roleMessage) };
      } catch (error) {
        return fail("ListRoles")(error);
      }
    },
    async listPermissions(_req, ctx) {
      try {
        await guard(ctx, "ListPermissions", []);
        return { permissions: (await authz.listPermissions()).map(permissionMessage) };
      } catch (error) {
        return fail("ListPermissions")(error);
      }
    },
    async listAuditEvents(req, ctx) {
      try {
        await guard(ctx, "ListAuditEvents", req.userId === "" ? [] : [req.userId]);
        const page = await authz.listAuditEvents(req);
        return { events: page.events.map(auditEventMessage), nextPageToken: page.nextPageToken };
      } catch (error) {
        return fail("ListAuditEvents")(error);
      }
    },
    async *watchChanges(req, ctx) {
      try {
        await guard(ctx, "WatchChanges", []);
        for await (const change of authz.watchChanges(req.after, ctx.signal)) {
          // Rights can end while a stream is open (a token expires, the watcher's role is revoked): no
          // change goes out without the caller being allowed it now. The check is served from memory.
          await guard(ctx, "WatchChanges", []);
          yield changeMessage(change);
        }
      } catch (error) {
        if (!ctx.signal.aborted) fail("WatchChanges")(error);
      }
      // The stream stops when its signal fires; end with why (deadline exceeded, cancelled, shutting down),
      // not with OK, which would tell the client it saw everything.
      if (ctx.signal.aborted && ctx.signal.reason instanceof ConnectError) throw ctx.signal.reason;
    },
  };
}
