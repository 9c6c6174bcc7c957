// FLIP's roles and permissions as the service lists them, fetched when a page first needs them and
// again when the Roles page is opened; the pages share one copy.

import type { Permission, Role } from "../../gen/flip/authz/v1/authz_pb.ts";
import type { AuthzClient } from "./api.ts";

export interface Catalog {
  roles(): Promise<Role[]>;
  permissions(): Promise<Permission[]>;
  /** Forgets what was fetched, so the next call asks the service again. */
  refresh(): void;
}

/** `load` once, shared by every caller until reset; a failure is not kept, so the next caller retries. */
function once<T>(load: () => Promise<T>): { get(): Promise<T>; reset(): void } {
  let value: Promise<T> | undefined;
  return {
    get() {
      if (value === undefined) {
        const loading = load();
        value = loading;
        loading.catch(() => {
          if (value === loading) value = undefined;
        });
      }
      return value;
    },
    reset() {
      value = undefined;
    },
  };
}

export function createCatalog(client: AuthzClient): Catalog {
  const roles = once(async () => (await client.listRoles({})).roles);
  const permissions = once(async () => (await client.listPermissions({})).permissions);
  return {
    roles: roles.get,
    permissions: permissions.get,
    refresh() {
      roles.reset();
      permissions.reset();
    },
  };
}
