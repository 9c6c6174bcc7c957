// The access token lives in sessionStorage only: it survives a reload of this tab, is gone when the tab
// closes, and is never in localStorage or a cookie (so no other tab or request carries it by itself).

const KEY = "flip-authz.access-token";

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
