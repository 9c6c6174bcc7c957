// AUTHZ_ACCESS_LOG=true: one info line per finished call on either listener, Envoy's Check included:
// method, status code, duration, peer, transport and request id. Nothing from the request's metadata or
// body is written, so credentials never reach it.

import { type CallHooks, codeName, type ServerLogger } from "./outcome.ts";

/** `hooks` (e.g. RpcMetrics), with an access log line written after each call is recorded. */
export function withAccessLog(hooks: CallHooks, logger: ServerLogger): CallHooks {
  return {
    echoRequestIds: true,
    start: (transport, method, type) => hooks.start(transport, method, type),
    record(call) {
      hooks.record(call);
      logger.info(
        {
          requestId: call.requestId.id,
          transport: call.transport,
          method: call.method,
          code: codeName(call.code),
          durationMs: Math.round(call.seconds * 1e6) / 1e3,
          peer: call.peer.getPeer(),
        },
        "call",
      );
    },
  };
}
