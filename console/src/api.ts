// The one way the console talks to flip-authz: AuthzService over the Connect protocol (JSON) with
// @connectrpc/connect-web and the generated messages in gen/, the same contract as every other client.
// The bearer token, when there is one, is read from the session on each call.

import { type Client, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { AuthzService } from "../../gen/flip/authz/v1/authz_pb.ts";

export type AuthzClient = Client<typeof AuthzService>;

/**
 * A client for the service that served this page: the API lives at the root of the origin the console
 * is under (`/console/` → `/`), also behind a proxy that mounts both under one prefix.
 */
export function createAuthzClient(token: () => string | null): AuthzClient {
  const bearer: Interceptor = (next) => (request) => {
    const value = token();
    if (value !== null) request.header.set("authorization", `Bearer ${value}`);
    return next(request);
  };
  const transport = createConnectTransport({
    baseUrl: new URL("../", document.baseURI).href.replace(/\/$/, ""),
    interceptors: [bearer],
  });
  return createClient(AuthzService, transport);
}
