// An RPC's one spelling: `package.Service/Method` in metrics, logs and spans, and with a leading slash as
// the request path gRPC and Connect send it on.

import type { DescMethod } from "@bufbuild/protobuf";

type Named = Pick<DescMethod, "parent" | "name">;

/** `package.Service/Method`. */
export function methodName(method: Named): string {
  return `${method.parent.typeName}/${method.name}`;
}

/** `/package.Service/Method`. */
export function methodPath(method: Named): string {
  return `/${methodName(method)}`;
}
