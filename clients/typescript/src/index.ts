// @flip-authz/client: a typed client for flip-authz, FLIP's authorization service (gRPC).

export {
  AuthzCallError,
  type AuthzClient,
  type AuthzClientOptions,
  type AuthzMethods,
  type CallOptions,
  Code,
  createAuthzClient,
  type RetryInfo,
  type RetryOptions,
  type TlsOptions,
  type TokenSource,
} from "./client.js";
export * from "./gen/flip/authz/v1/authz_pb.js";
export type { AuthzSession } from "./session.js";
