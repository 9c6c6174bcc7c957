// Envoy's external authorization, envoy.service.auth.v3.Authorization/Check (SIDECARS.md §3), on the gRPC
// listener: the request Envoy describes goes to the route guard and its decision becomes a CheckResponse.
// The RPC itself always succeeds; a malformed or incomplete CheckRequest is a denial, never an RPC error.
// Served straight on grpc-js rather than through the Connect bridge: Envoy calls it on every request.

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  HeaderValueOption_HeaderAppendAction as HeaderAppendAction,
  type HeaderValueOptionSchema,
} from "../../gen/envoy/config/core/v3/base_pb.ts";
import {
  Authorization,
  type CheckRequest,
  CheckRequestSchema,
  CheckResponseSchema,
} from "../../gen/envoy/service/auth/v3/external_auth_pb.ts";
import { StatusCode } from "../../gen/envoy/type/v3/http_status_pb.ts";
import type { Decision, GuardRequest, RouteGuard } from "../guard/decide.ts";
import { requestScope } from "../logger.ts";
import { methodName } from "../rpc/method-name.ts";
import type { CallTracer } from "../tracing/call-span.ts";
import { denialBody, USER_HEADER } from "./guard-answer.ts";
import { type CallHooks, reportCall, reportStart, type ServerLogger } from "./outcome.ts";
import { CallId, REQUEST_ID_HEADER, sentRequestId } from "./request-id.ts";

export interface ExtAuthzOptions {
  /** Called with every decision, e.g. RpcMetrics.decision. */
  onDecision(decision: Decision): void;
  /** Told of each Check's start and end (e.g. RpcMetrics), as the other RPCs are. */
  calls?: CallHooks;
  /** Logs a failing hook. */
  logger?: ServerLogger;
  /** With tracing on: a server span per Check (ended by the `calls` hooks, see withCallSpans). */
  tracer?: CallTracer;
}

const CHECK = Authorization.method.check;
const METHOD_NAME = methodName(CHECK);
const PARSE = { readUnknownFields: false };
const CHECK_RECORD = {
  transport: "grpc",
  method: METHOD_NAME,
  type: "unary",
  code: 0,
  seconds: 0,
  received: 1,
  sent: 1,
} as const;

/** The original request in a CheckRequest, or undefined when it does not describe an HTTP request. */
function guardRequestOf(check: CheckRequest): GuardRequest | undefined {
  const http = check.attributes?.request?.http;
  if (http === undefined) return undefined;
  let authorization: string | undefined;
  const raw = http.headerMap?.headers;
  if (raw !== undefined && raw.length > 0) {
    // encode_raw_headers: true. Repeated headers are joined as Envoy's map joins them, so two credentials
    // become one malformed value rather than a choice.
    const values = raw
      .filter((header) => header.key.toLowerCase() === "authorization")
      .map((header) =>
        header.rawValue.length > 0 ? Buffer.from(header.rawValue).toString("latin1") : header.value,
      );
    if (values.length > 0) authorization = values.join(",");
  } else {
    authorization = http.headers.authorization;
  }
  return { method: http.method, path: http.path, authorization };
}

function header(key: string, value: string) {
  return {
    header: { key, value },
    // OVERWRITE_IF_EXISTS_OR_ADD replaces a client-sent value; append = false says so to older Envoys.
    append: false,
    appendAction: HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
  } satisfies Parameters<typeof create<typeof HeaderValueOptionSchema>>[1];
}

const ALLOW_PUBLIC = Buffer.from(
  toBinary(
    CheckResponseSchema,
    create(CheckResponseSchema, {
      status: { code: grpc.status.OK },
      httpResponse: { case: "okResponse", value: { headersToRemove: [USER_HEADER] } },
    }),
  ),
);

/** Encoded allow answers by user: the same user's next request costs a lookup, not an encoding. */
const allowed = new Map<string, Buffer>();
const ALLOWED_KEPT = 10_000;

function allowUser(userId: string): Buffer {
  let bytes = allowed.get(userId);
  if (bytes === undefined) {
    const response = create(CheckResponseSchema, {
      status: { code: grpc.status.OK },
      httpResponse: { case: "okResponse", value: { headers: [header(USER_HEADER, userId)] } },
    });
    bytes = Buffer.from(toBinary(CheckResponseSchema, response));
    if (allowed.size >= ALLOWED_KEPT) allowed.clear();
    allowed.set(userId, bytes);
  }
  return bytes;
}

/** The CheckResponse carrying `decision`, encoded. */
function checkResponseOf(decision: Decision): Buffer {
  if (decision.kind === "allow") return decision.userId === "" ? ALLOW_PUBLIC : allowUser(decision.userId);
  const unauthenticated = decision.kind === "unauthenticated";
  const headers = [header("content-type", "application/json")];
  if (unauthenticated) headers.push(header("www-authenticate", "Bearer"));
  const response = create(CheckResponseSchema, {
    status: {
      code: unauthenticated ? grpc.status.UNAUTHENTICATED : grpc.status.PERMISSION_DENIED,
      message: decision.message,
    },
    httpResponse: {
      case: "deniedResponse",
      value: {
        // Fail closed: a decision that could not be made is a 403 to the client, like any denial.
        status: { code: unauthenticated ? StatusCode.Unauthorized : StatusCode.Forbidden },
        headers,
        body: denialBody(decision, 403),
      },
    },
  });
  return Buffer.from(toBinary(CheckResponseSchema, response));
}

const MALFORMED: Decision = {
  kind: "error",
  route: "none",
  userId: "",
  message: "the check request is malformed",
};
const NOT_HTTP: Decision = {
  kind: "error",
  route: "none",
  userId: "",
  message: "the check request describes no HTTP request",
};

/** Serves Authorization/Check on a grpc-js server, answered by `guard`, without credentials (§3). */
export function addExtAuthzService(server: grpc.Server, guard: RouteGuard, options: ExtAuthzOptions): void {
  const passThrough = (value: Buffer) => value;
  const definition: grpc.ServiceDefinition = {
    [CHECK.name]: {
      path: `/${METHOD_NAME}`,
      requestStream: false,
      responseStream: false,
      requestSerialize: passThrough,
      requestDeserialize: passThrough,
      responseSerialize: passThrough,
      responseDeserialize: passThrough,
    },
  };
  const { calls, logger = console, tracer } = options;
  // The RPC always answers OK (the decision is inside); a malformed request was not received as a message.
  const answer = (
    call: grpc.ServerUnaryCall<Buffer, Buffer>,
    callback: grpc.sendUnaryData<Buffer>,
    decision: Decision,
    started: number,
    received: number,
    requestId: CallId,
  ) => {
    options.onDecision(decision);
    callback(null, checkResponseOf(decision));
    const seconds = (performance.now() - started) / 1000;
    reportCall(calls, logger, { ...CHECK_RECORD, seconds, received, peer: call, requestId });
  };
  const decide = (
    call: grpc.ServerUnaryCall<Buffer, Buffer>,
    callback: grpc.sendUnaryData<Buffer>,
    request: GuardRequest,
    started: number,
    requestId: CallId,
  ) => {
    void guard.decide(request).then((decided) => answer(call, callback, decided, started, 1, requestId));
  };
  const check: grpc.handleUnaryCall<Buffer, Buffer> = (call, callback) => {
    const started = performance.now();
    reportStart(calls, logger, "grpc", METHOD_NAME, "unary");
    // The request id: Check's own x-request-id, else the one Envoy gave the original request, else one
    // made when something asks. Not echoed: Envoy passes nothing of Check's metadata on.
    const sent = call.metadata.get(REQUEST_ID_HEADER);
    const own = sent.length === 1 ? sentRequestId(sent[0]) : undefined;
    let parsed: CheckRequest;
    try {
      parsed = fromBinary(CheckRequestSchema, call.request, PARSE);
    } catch {
      return answer(call, callback, MALFORMED, started, 0, new CallId(own));
    }
    const requestId = new CallId(own ?? sentRequestId(parsed.attributes?.request?.http?.id));
    if (tracer !== undefined) requestId.span = tracer.startRpc("grpc", METHOD_NAME, call.metadata);
    const request = guardRequestOf(parsed);
    if (request === undefined) return answer(call, callback, NOT_HTTP, started, 1, requestId);
    // Decided at once, nothing is logged: the request's scope is not entered (it costs a share of a call
    // this cheap). Anything else, and everything when tracing, runs in it: whatever the guard logs (a
    // failed lookup) carries the request id (src/logger.ts).
    const now = tracer === undefined ? guard.now(request) : undefined;
    if (now !== undefined) return answer(call, callback, now, started, 1, requestId);
    requestScope.run(requestId, decide, call, callback, request, started, requestId);
  };
  server.addService(definition, { [CHECK.name]: check });
}
