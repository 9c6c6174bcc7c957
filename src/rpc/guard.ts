// The guard every handler calls first: the caller from the `authorization` header (src/auth), then the
// authorization matrix, asking the domain whether a user actor holds CAN_MANAGE_USERS.

import type { Authenticator } from "../auth/authenticator.ts";
import { authorize, authorizeNow, type CanManageUsers, WRITE_METHODS } from "../auth/rules.ts";
import type { AuthzQueries } from "../authz/authz.ts";
import { CACHED, FULL } from "../authz/reader.ts";
import type { Guard } from "./service.ts";

/**
 * Decides without waiting when it can (open mode, a service token, a user about themself: the sidecars'
 * checks), so a cached check costs no promise here; verifies a JWT or asks about CAN_MANAGE_USERS
 * asynchronously otherwise.
 */
export function createGuard(authenticator: Authenticator, authz: AuthzQueries): Guard {
  // Calls that change something decide the actor's rights from the database, not from a cache.
  const manages =
    (consistency: typeof CACHED): CanManageUsers =>
    (actorId) =>
      authz.holds(actorId, "CAN_MANAGE_USERS", consistency);
  const managesCached = manages(CACHED);
  const managesFull = manages(FULL);
  return (ctx, method, subjects) => {
    const authorization = ctx.requestHeader.get("authorization");
    const caller = authenticator.authenticateNow(authorization);
    const actor = caller === undefined ? undefined : authorizeNow(caller, method, subjects);
    if (actor !== undefined) return actor;
    return (async () => {
      const verified = caller ?? (await authenticator.authenticate(authorization));
      return await authorize(
        verified,
        method,
        subjects,
        WRITE_METHODS.has(method) ? managesFull : managesCached,
      );
    })();
  };
}
