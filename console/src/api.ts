// The one way the console talks to flip-authz: AuthzService over the Connect protocol (JSON) with
// @connectrpc/connect-web and the generated messages in gen/, the same contract as every other client.
// The bearer token, when there is one, is read from the session on each call.

import { type Client, Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { AuthzService } from "../../gen/flip/authz/v1/authz_pb.ts";

export type AuthzClient = Client<typeof AuthzService>;

/**
 * A client for the service that served this page: the API lives at the root of the origin the console
 * is under (`/console/` → `/`), also behind a proxy that mounts both under one prefix. `onRejected` hears
 * of a call whose token the service no longer accepts (expired, its key retired).
 */
export function createAuthzClient(
  token: () => string | null,
  onRejected: (error: ConnectError) => void = () => {},
): AuthzClient {
  const bearer: Interceptor = (next) => async (request) => {
    const value = token();
    if (value !== null) request.header.set("authorization", `Bearer ${value}`);
    try {
      return await next(request);
    } catch (error) {
      const refusal = ConnectError.from(error);
      if (value !== null && refusal.code === Code.Unauthenticated) onRejected(refusal);
      throw error;
    }
  };
  const transport = createConnectTransport({
    baseUrl: new URL("../", document.baseURI).href,
    interceptors: [bearer],
  });
  return createClient(AuthzService, transport);
}
