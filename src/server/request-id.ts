// Request ids: `x-request-id` from the call's metadata or headers when it is a sane token (1–128 characters
// of letters, digits and . _ ~ : @ + = / -), else a new UUID, made only when something needs it (a log
// line, a failure's status, the access log, the HTTP listener's answer). Every log line written while a
// call runs carries it (src/logger.ts reads the call's CallId from requestScope).

import { randomUUID } from "node:crypto";
import type { CallSpan } from "../tracing/call-span.ts";

export const REQUEST_ID_HEADER = "x-request-id";

const VALID = /^[A-Za-z0-9._~:@+=/-]{1,128}$/;

/** The id a caller sent, when valid (a repeated, too long or odd one counts as none). */
export function sentRequestId(sent: unknown): string | undefined {
  return typeof sent === "string" && VALID.test(sent) ? sent : undefined;
}

/** One call's request id: the caller's, or a UUID made the first time it is asked for. */
export class CallId {
  #id: string | undefined;
  /** The call's server span when tracing is on (src/tracing/); its log lines carry its ids. */
  span: CallSpan | undefined = undefined;

  constructor(sent: string | undefined) {
    this.#id = sent;
  }

  get id(): string {
    this.#id ??= randomUUID();
    return this.#id;
  }

  /** True once the call has an id: sent by the caller, or made because something asked. */
  get known(): boolean {
    return this.#id !== undefined;
  }
}
