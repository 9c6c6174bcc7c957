// Changes: WatchChanges from the moment the page is first opened (after the revision a read answers then,
// so a change made while the stream is still opening is not lost), newest on top. The stream stays open
// while the console is; when it breaks (a restart, a network blip) it resumes after the last revision
// shown, so nothing is missed or shown twice. Refusals (not allowed, signed out) stop it.

import { Code, ConnectError } from "@connectrpc/connect";
import { ChangeKind, type WatchChangesResponse } from "../../../gen/flip/authz/v1/authz_pb.ts";
import { byId, el, showError } from "../dom.ts";
import type { Context, Page } from "./page.ts";

/** The most rows kept on the page; older ones are dropped from the bottom. */
const MAX_ROWS = 500;
const RETRY_MS = [1000, 2000, 5000, 10_000];

/** Worth watching again after: the service or the network was away, not a refusal of this caller. */
const TRANSIENT = new Set([
  Code.Unavailable,
  Code.Unknown,
  Code.Internal,
  Code.DeadlineExceeded,
  Code.Aborted,
]);

const KINDS: Record<ChangeKind, string> = {
  [ChangeKind.UNSPECIFIED]: "unspecified",
  [ChangeKind.USER_ROLES]: "user roles",
  [ChangeKind.ROLE_PERMISSIONS]: "role permissions",
  [ChangeKind.PROFILE]: "profile",
};

export function createChangesPage({ client }: Context): Page {
  const status = byId("changes-status", HTMLParagraphElement);
  const alert = byId("changes-alert", HTMLDivElement);
  const table = byId("changes-table", HTMLTableElement);
  const body = table.tBodies[0] ?? table.createTBody();
  let started = false;
  let after = "";

  /** The revision the service has reached: watching after it misses nothing from this moment on. */
  const now = async () => (await client.listPermissions({})).readAt;

  const watch = async (attempt: number): Promise<void> => {
    try {
      if (after === "") after = await now();
      status.textContent = attempt === 0 ? "Watching for changes…" : "Reconnecting…";
      for await (const change of client.watchChanges({ after })) {
        if (attempt > 0) {
          alert.textContent = "";
          status.textContent = "Watching for changes…";
          attempt = 0;
        }
        after = change.revision;
        body.prepend(row(change));
        while (body.rows.length > MAX_ROWS) body.lastElementChild?.remove();
      }
      throw new ConnectError("the stream ended", Code.Unavailable);
    } catch (error) {
      const code = error instanceof ConnectError ? error.code : Code.Unknown;
      if (code === Code.InvalidArgument && after !== "") {
        // Away longer than the change log keeps: say so in the list, then watch from now (a fresh read).
        after = "";
        body.prepend(
          el("tr", {}, el("td", { colspan: "3", class: "muted" }, "Changes may have been missed here.")),
        );
        return watch(attempt + 1);
      }
      if (!TRANSIENT.has(code)) {
        status.textContent = "Not watching.";
        showError(alert, error);
        return;
      }
      const delay = RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)] ?? 10_000;
      showError(alert, error, `The change stream broke; trying again in ${delay / 1000} s: `);
      await new Promise((resolve) => setTimeout(resolve, delay));
      return watch(attempt + 1);
    }
  };

  return {
    show() {
      if (started) return;
      started = true;
      void watch(0);
    },
  };
}

function row(change: WatchChangesResponse): HTMLTableRowElement {
  const everyone = change.kind !== ChangeKind.ROLE_PERMISSIONS && change.userId === "";
  return el(
    "tr",
    {},
    el("td", { class: "mono" }, change.revision),
    el("td", {}, KINDS[change.kind] ?? String(change.kind)),
    el("td", { class: "mono" }, everyone ? "(every user)" : change.userId),
  );
}
