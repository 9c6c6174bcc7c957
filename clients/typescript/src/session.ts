// Read-your-writes: a session remembers the newest written_at of its writes and passes it as
// at_least_as_fresh to its reads, so a read on any replica or follower reflects what the session wrote.

import type { AuthzMethods } from "./client.js";

export interface AuthzSession extends AuthzMethods {
  /** The newest revision this session has written (or was started at); undefined before any. */
  readonly revision: string | undefined;
}

const WRITES = ["assignRole", "revokeRole", "setUserRoles", "updateProfile"] as const;
const READS = ["checkPermission", "getProfile", "listRoles", "listPermissions"] as const;

/** The later of two revisions: they are opaque strings, but ordered; today's are decimal numbers. */
function later(a: string | undefined, b: string): string {
  if (a === undefined || a === "") return b;
  if (/^\d+$/.test(a) && /^\d+$/.test(b)) return BigInt(b) > BigInt(a) ? b : a;
  return b;
}

type AnyMethod = (request: Record<string, unknown>, options?: unknown) => unknown;

export function createSession(client: AuthzMethods, after?: string): AuthzSession {
  let revision: string | undefined = after === "" ? undefined : after;
  const methods = client as unknown as Record<string, AnyMethod>;
  const fresh = (request: Record<string, unknown>) =>
    revision !== undefined && !request.atLeastAsFresh ? { ...request, atLeastAsFresh: revision } : request;
  const session: Record<string, unknown> = { ...methods };
  for (const name of WRITES) {
    const write = methods[name] as AnyMethod;
    session[name] = async (request: Record<string, unknown>, options?: unknown) => {
      const answer = (await write(request, options)) as { writtenAt: string };
      revision = later(revision, answer.writtenAt);
      return answer;
    };
  }
  for (const name of READS) {
    const read = methods[name] as AnyMethod;
    session[name] = (request: Record<string, unknown>, options?: unknown) => read(fresh(request), options);
  }
  const checks = methods.checkPermissions as AnyMethod;
  session.checkPermissions = (request: { checks?: Record<string, unknown>[] }, options?: unknown) =>
    checks({ ...request, checks: (request.checks ?? []).map(fresh) }, options);
  Object.defineProperty(session, "revision", { get: () => revision, enumerable: true });
  return session as unknown as AuthzSession;
}
