// Forward auth on the HTTP listener (SIDECARS.md §4), any method. Each endpoint reads the original request
// from exactly one place, so a client can never choose where it is read from:
//   /forward-auth          X-Forwarded-Method + X-Forwarded-Uri (nginx, Caddy, Traefik set them)
//   /ext-authz/<path>      this request's own method and the path after the prefix (Envoy's http_service)
// 200 allows (X-Flip-User-Id), 401/403 deny with a JSON body, 503 when the decision cannot be made.
// X-Request-Id goes back on every denial and error, and on an allow when the proxy sent one or a log line
// of the request made one: as on the gRPC listener, an id nobody sent and nothing logged is not worth its
// cost (making and writing it took a sixth of an allowed request's throughput: bench, route guard).

import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from "node:http";
import type { Decision, GuardRequest, RouteGuard } from "../guard/decide.ts";
import { requestScope } from "../logger.ts";
import type { CallTracer } from "../tracing/call-span.ts";
import { denialBody, USER_HEADER } from "./guard-answer.ts";
import { type CallId, REQUEST_ID_HEADER } from "./request-id.ts";

const FORWARD_AUTH_PATH = "/forward-auth";
const EXT_AUTHZ_PREFIX = "/ext-authz";

/** Whether `path` (the request's path, query cut) is /forward-auth or /ext-authz[/…]. */
export function isForwardAuthPath(path: string): boolean {
  return path === FORWARD_AUTH_PATH || path === EXT_AUTHZ_PREFIX || path.startsWith(`${EXT_AUTHZ_PREFIX}/`);
}

/**
 * Answers a request whose path isForwardAuthPath; `requestId` is the request's (src/server/request-id.ts).
 * Called outside the request's scope (src/logger.ts): it enters the scope itself for what may log.
 */
export type ForwardAuthHandler = (
  request: IncomingMessage,
  response: ServerResponse,
  path: string,
  requestId: CallId,
) => void;

/** The values of the headers a forward-auth call reads, each as often as it was sent. */
interface Sent {
  method: string[];
  uri: string[];
  authorization: string[];
}

/** One pass over the raw headers (cheaper than node's headersDistinct, which copies every header). */
function sentHeaders(request: IncomingMessage): Sent {
  const sent: Sent = { method: [], uri: [], authorization: [] };
  const raw = request.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    // Only names of these lengths can match: most headers are skipped without lower-casing them.
    if (name.length === 13 && name.toLowerCase() === "authorization")
      sent.authorization.push(raw[i + 1] as string);
    else if (name.length === 18 && name.toLowerCase() === "x-forwarded-method")
      sent.method.push(raw[i + 1] as string);
    else if (name.length === 15 && name.toLowerCase() === "x-forwarded-uri")
      sent.uri.push(raw[i + 1] as string);
  }
  return sent;
}

/** Repeated credentials become one malformed value (refused), never a choice between them. */
function authorizationOf(sent: Sent): string | undefined {
  return sent.authorization.length === 0 ? undefined : sent.authorization.join(", ");
}

function refusal(message: string): Decision {
  return { kind: "deny", route: "none", userId: "", message };
}

/** The original request a /forward-auth call describes, or the denial when it does not (a header missing or repeated). */
function forwarded(sent: Sent): GuardRequest | Decision {
  const [method] = sent.method;
  const [uri] = sent.uri;
  if (method === undefined || uri === undefined || sent.method.length > 1 || sent.uri.length > 1) {
    return refusal("X-Forwarded-Method and X-Forwarded-Uri are required, once each");
  }
  return { method, path: uri, authorization: authorizationOf(sent) };
}

/** Answers with the decision; returns the HTTP status sent. */
function answer(response: ServerResponse, decision: Decision, envoy: boolean, requestId: CallId): number {
  const headers: OutgoingHttpHeaders = { "cache-control": "no-store" };
  if (decision.kind !== "allow" || requestId.known) headers[REQUEST_ID_HEADER] = requestId.id;
  if (decision.kind === "allow") {
    // Empty on a public route, so a proxy that copies it replaces a client-sent value with nothing.
    headers[USER_HEADER] = decision.userId;
    if (envoy && decision.userId === "") headers["x-envoy-auth-headers-to-remove"] = USER_HEADER;
    response.writeHead(200, headers);
    response.end();
    return 200;
  }
  const body = denialBody(decision, 503);
  headers["content-type"] = "application/json";
  headers["content-length"] = Buffer.byteLength(body);
  if (decision.kind === "unauthenticated") headers["www-authenticate"] = "Bearer";
  const status = decision.kind === "unauthenticated" ? 401 : decision.kind === "deny" ? 403 : 503;
  response.writeHead(status, headers);
  response.end(body);
  return status;
}

export function createForwardAuthHandler(
  guard: RouteGuard,
  onDecision: (decision: Decision) => void,
  tracer?: CallTracer,
): ForwardAuthHandler {
  /** The request's original, or the denial when it does not describe one. */
  const originalOf = (request: IncomingMessage, envoy: boolean): GuardRequest | Decision => {
    const sent = sentHeaders(request);
    // A body (Envoy and nginx send none) is never read: node discards it once the answer is sent.
    return envoy
      ? {
          method: request.method ?? "",
          path: (request.url ?? "").slice(EXT_AUTHZ_PREFIX.length),
          authorization: authorizationOf(sent),
        }
      : forwarded(sent);
  };
  const respond = (response: ServerResponse, decision: Decision, envoy: boolean, requestId: CallId) => {
    onDecision(decision);
    return !response.headersSent && !response.destroyed ? answer(response, decision, envoy, requestId) : 0;
  };
  /** In the request's scope: whatever the guard logs, or a span, carries the request id. */
  const decideLater = (
    request: IncomingMessage,
    response: ServerResponse,
    envoy: boolean,
    original: GuardRequest | Decision,
    requestId: CallId,
  ) => {
    // With tracing on, a server span for the request, on its id (the scope's) so the guard's lookups join it.
    const span = tracer?.startHttp(
      envoy ? `${EXT_AUTHZ_PREFIX}/*` : FORWARD_AUTH_PATH,
      request.method ?? "",
      {
        get: (name) => request.headers[name],
      },
    );
    if (span) requestId.span = span;
    const decided = (decision: Decision) => {
      const status = respond(response, decision, envoy, requestId);
      span?.end(status);
    };
    if ("kind" in original) decided(original);
    else void guard.decide(original).then(decided);
  };
  return (request, response, path, requestId) => {
    const envoy = path !== FORWARD_AUTH_PATH;
    const original = originalOf(request, envoy);
    // Decided at once, nothing is logged: the request's scope is not entered (that cost an allowed
    // request ~5% of its throughput, bench guard). Anything else, and everything when tracing, runs in it.
    if (tracer === undefined) {
      const now = "kind" in original ? original : guard.now(original);
      if (now !== undefined) return void respond(response, now, envoy, requestId);
    }
    requestScope.run(requestId, decideLater, request, response, envoy, original, requestId);
  };
}
