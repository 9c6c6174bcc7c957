// Forward auth on the HTTP listener (SIDECARS.md §4), any method. Each endpoint reads the original request
// from exactly one place, so a client can never choose where it is read from:
//   /forward-auth          X-Forwarded-Method + X-Forwarded-Uri (nginx, Caddy, Traefik set them)
//   /ext-authz/<path>      this request's own method and the path after the prefix (Envoy's http_service)
// 200 allows (X-Flip-User-Id), 401/403 deny with a JSON body, 503 when the decision cannot be made.

import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from "node:http";
import type { Decision, GuardRequest, RouteGuard } from "../guard/decide.ts";
import { denialBody, USER_HEADER } from "./guard-answer.ts";

const FORWARD_AUTH_PATH = "/forward-auth";
const EXT_AUTHZ_PREFIX = "/ext-authz";

/** Whether `path` (the request's path, query cut) is /forward-auth or /ext-authz[/…]. */
export function isForwardAuthPath(path: string): boolean {
  return path === FORWARD_AUTH_PATH || path === EXT_AUTHZ_PREFIX || path.startsWith(`${EXT_AUTHZ_PREFIX}/`);
}

/** Answers a request whose path isForwardAuthPath. */
export type ForwardAuthHandler = (request: IncomingMessage, response: ServerResponse, path: string) => void;

/** The one value of a header, or undefined when it is absent or sent more than once (ambiguous). */
function single(request: IncomingMessage, name: string): string | undefined {
  const values = request.headersDistinct[name];
  return values?.length === 1 ? values[0] : undefined;
}

/** Repeated credentials become one malformed value (refused), never a choice between them. */
function authorizationOf(request: IncomingMessage): string | undefined {
  return request.headersDistinct.authorization?.join(", ");
}

function refusal(message: string): Decision {
  return { kind: "deny", route: "none", userId: "", message };
}

/** The original request a /forward-auth call describes, or the denial when it does not. */
function forwarded(request: IncomingMessage): GuardRequest | Decision {
  const method = single(request, "x-forwarded-method");
  const uri = single(request, "x-forwarded-uri");
  if (method === undefined || uri === undefined) {
    return refusal("X-Forwarded-Method and X-Forwarded-Uri are required, once each");
  }
  return { method, path: uri, authorization: authorizationOf(request) };
}

function answer(response: ServerResponse, decision: Decision, envoy: boolean): void {
  const headers: OutgoingHttpHeaders = { "cache-control": "no-store" };
  if (decision.kind === "allow") {
    // Empty on a public route, so a proxy that copies it replaces a client-sent value with nothing.
    headers[USER_HEADER] = decision.userId;
    if (envoy && decision.userId === "") headers["x-envoy-auth-headers-to-remove"] = USER_HEADER;
    response.writeHead(200, headers);
    response.end();
    return;
  }
  const body = denialBody(decision, 503);
  headers["content-type"] = "application/json";
  headers["content-length"] = Buffer.byteLength(body);
  if (decision.kind === "unauthenticated") headers["www-authenticate"] = "Bearer";
  const status = decision.kind === "unauthenticated" ? 401 : decision.kind === "deny" ? 403 : 503;
  response.writeHead(status, headers);
  response.end(body);
}

export function createForwardAuthHandler(
  guard: RouteGuard,
  onDecision: (decision: Decision) => void,
): ForwardAuthHandler {
  return (request, response, path) => {
    const envoy = path !== FORWARD_AUTH_PATH;
    const original: GuardRequest | Decision = envoy
      ? {
          method: request.method ?? "",
          path: (request.url ?? "").slice(EXT_AUTHZ_PREFIX.length),
          authorization: authorizationOf(request),
        }
      : forwarded(request);
    // A body (Envoy and nginx send none, others may) is not read: drain it so keep-alive goes on.
    request.resume();
    const respond = (decision: Decision) => {
      onDecision(decision);
      if (!response.headersSent && !response.destroyed) answer(response, decision, envoy);
    };
    if ("kind" in original) respond(original);
    else void guard(original).then(respond);
  };
}
