// The guard every handler calls first: the caller from the `authorization` header (src/auth), then the
// authorization matrix, asking the domain whether a user actor holds CAN_MANAGE_USERS.

import type { Authenticator } from "../auth/authenticator.ts";
import { authorize, WRITE_METHODS } from "../auth/rules.ts";
import type { AuthzQueries } from "../authz/authz.ts";
import { CACHED, FULL } from "../authz/reader.ts";
import type { Guard } from "./service.ts";

export function createGuard(authenticator: Authenticator, authz: AuthzQueries): Guard {
  return async (ctx, method, subjects) => {
    const caller = await authenticator.authenticate(ctx.requestHeader.get("authorization"));
    // Calls that change something decide the actor's rights from the database, not from a cache.
    const consistency = WRITE_METHODS.has(method) ? FULL : CACHED;
    // Awaited rather than returned: V8 settles an awaited promise in one tick, a returned one in three.
    return await authorize(caller, method, subjects, (actorId) =>
      authz.holds(actorId, "CAN_MANAGE_USERS", consistency),
    );
  };
}
