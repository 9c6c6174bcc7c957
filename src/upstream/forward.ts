// What a follower does not answer itself: writes, the audit log and WatchChanges go to the upstream with
// the caller's own `authorization` header (the upstream authorizes and audits the caller, never this
// follower's token), the caller's remaining deadline and the call's request id (made here if the caller
// sent none, so both services log the same one); answers and status codes come back unchanged.

import type {
  DescMessage,
  DescMethodServerStreaming,
  DescMethodUnary,
  MessageShape,
} from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { AuthzService } from "../../gen/flip/authz/v1/authz_pb.ts";
import { requestScope } from "../logger.ts";
import { statusOf, type UpstreamClient } from "./client.ts";

const m = AuthzService.method;

export type Forwarded = Pick<
  ServiceImpl<typeof AuthzService>,
  "assignRole" | "revokeRole" | "setUserRoles" | "updateProfile" | "listAuditEvents" | "watchChanges"
>;

function callOptions(ctx: HandlerContext) {
  const timeoutMs = ctx.timeoutMs();
  const requestId = requestScope.getStore()?.id;
  return {
    authorization: ctx.requestHeader.get("authorization"),
    ...(requestId !== undefined && { requestId }),
    ...(timeoutMs !== undefined && { deadline: Date.now() + timeoutMs }),
    signal: ctx.signal,
  };
}

/** The upstream's status, as the caller's: same code, same message. */
function passThrough(error: unknown): unknown {
  const status = statusOf(error);
  if (status === undefined) return error;
  return new ConnectError(status.details, status.code as number as Code);
}

function unary<I extends DescMessage, O extends DescMessage>(
  client: UpstreamClient,
  method: DescMethodUnary<I, O>,
) {
  return async (req: MessageShape<I>, ctx: HandlerContext): Promise<MessageShape<O>> => {
    try {
      return await client.unary(method, req, callOptions(ctx));
    } catch (error) {
      throw passThrough(error);
    }
  };
}

function serverStream<I extends DescMessage, O extends DescMessage>(
  client: UpstreamClient,
  method: DescMethodServerStreaming<I, O>,
) {
  return async function* (req: MessageShape<I>, ctx: HandlerContext): AsyncGenerator<MessageShape<O>> {
    const call = client.stream(method, req, callOptions(ctx));
    try {
      for await (const message of call) yield message as MessageShape<O>;
    } catch (error) {
      // Ended from this side (the caller left, the deadline passed, a shutdown): the transport says why.
      if (ctx.signal.aborted) {
        if (ctx.signal.reason instanceof ConnectError) throw ctx.signal.reason;
        throw new ConnectError("the call was cancelled", Code.Canceled);
      }
      throw passThrough(error);
    } finally {
      call.cancel();
    }
  };
}

export function createForwarder(client: UpstreamClient): Forwarded {
  return {
    assignRole: unary(client, m.assignRole),
    revokeRole: unary(client, m.revokeRole),
    setUserRoles: unary(client, m.setUserRoles),
    updateProfile: unary(client, m.updateProfile),
    listAuditEvents: unary(client, m.listAuditEvents),
    watchChanges: serverStream(client, m.watchChanges),
  };
}
