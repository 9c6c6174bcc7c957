// Audit: ListAuditEvents newest first, filtered by user on request, one page at a time (Next page
// follows next_page_token; it is disabled on the last page).

import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { AuditEvent } from "../../../gen/flip/authz/v1/authz_pb.ts";
import { byId, clear, el, formatTime, onSubmit, showError } from "../dom.ts";
import type { Context, Page } from "./page.ts";

/** The actor recorded when there is none (open mode, the command line). */
const NIL_UUID = "00000000-0000-0000-0000-000000000000";

export function createAuditPage({ client }: Context): Page {
  const form = byId("audit-form", HTMLFormElement);
  const filter = byId("audit-user", HTMLInputElement);
  const alert = byId("audit-alert", HTMLDivElement);
  const table = byId("audit-table", HTMLTableElement);
  const body = table.tBodies[0] ?? table.createTBody();
  const status = byId("audit-status", HTMLParagraphElement);
  const next = byId("audit-next", HTMLButtonElement);
  let userId = "";
  let nextToken = "";
  let loaded = false;

  const load = async (pageToken: string) => {
    clear(alert);
    try {
      const answer = await client.listAuditEvents({ userId, pageToken });
      body.replaceChildren(...answer.events.map(row));
      nextToken = answer.nextPageToken;
      next.disabled = nextToken === "";
      const about = userId === "" ? "" : ` about ${userId}`;
      status.textContent =
        answer.events.length === 0
          ? `No events${about}.`
          : `${answer.events.length} events${about}${nextToken === "" ? ", the last page" : ""}.`;
      loaded = true;
    } catch (error) {
      showError(alert, error);
    }
  };

  onSubmit(form, async () => {
    userId = filter.value.trim();
    await load("");
  });
  next.addEventListener("click", () => {
    if (nextToken !== "") void load(nextToken);
  });

  return {
    show() {
      if (!loaded) void load("");
    },
  };
}

function row(event: AuditEvent): HTMLTableRowElement {
  const time = event.timestamp ? timestampDate(event.timestamp) : undefined;
  return el(
    "tr",
    {},
    el("td", { class: "mono" }, el("time", time ? { datetime: time.toISOString() } : {}, formatTime(time))),
    el("td", {}, event.action),
    el("td", { class: "mono" }, event.userId),
    el(
      "td",
      event.modifiedByUserId === NIL_UUID
        ? { class: "mono", title: "nobody signed in: open mode or the command line" }
        : { class: "mono" },
      event.modifiedByUserId,
    ),
  );
}
