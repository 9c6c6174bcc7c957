// The access token lives in sessionStorage only: it survives a reload of this tab, is gone when the tab
// closes, and is never in localStorage or a cookie (so no other tab or request carries it by itself).

const KEY = "flip-authz.access-token";
/** Why the last session ended, shown once on the sign-in form after the page starts afresh. */
const ENDED = "flip-authz.session-ended";

export const session = {
  token(): string | null {
    return sessionStorage.getItem(KEY);
  },
  keep(token: string): void {
    sessionStorage.setItem(KEY, token);
  },
  forget(): void {
    sessionStorage.removeItem(KEY);
  },
  /** Forgets the token, noting why, for the next start of the page to say. */
  end(reason: string): void {
    sessionStorage.removeItem(KEY);
    sessionStorage.setItem(ENDED, reason);
  },
  /** Why the last session ended, once (null when it was not ended by a refusal). */
  takeEndReason(): string | null {
    const reason = sessionStorage.getItem(ENDED);
    sessionStorage.removeItem(ENDED);
    return reason;
  },
};

/** The `sub` of a JWT, read for display only (the server verifies the token; this does not). */
export function subjectOf(token: string): string | null {
  const payload = token.split(".")[1];
  if (payload === undefined) return null;
  try {
    const json: unknown = JSON.parse(atob(payload.replace(/-/g, "+").replace(/_/g, "/")));
    if (typeof json === "object" && json !== null && "sub" in json && typeof json.sub === "string") {
      return json.sub;
    }
  } catch {
    // Not a JWT (a service token): nothing to show.
  }
  return null;
}
