// How the domain reads roles and permissions. The database reader asks the store every time; the cached
// reader (cached-reader.ts) wraps it behind the same interface and answers from memory when it may.

import { type IndexedRole, RoleIndex } from "./role-index.ts";
import type { Revision, Store } from "./store.ts";

/**
 * What a read must reflect: `cached` may be a moment stale; `fresh` must reflect every change up to
 * `atLeast`; `full` reads the database.
 */
export type Consistency = { kind: "cached" } | { kind: "fresh"; atLeast: Revision } | { kind: "full" };

export const CACHED: Consistency = { kind: "cached" };
export const FULL: Consistency = { kind: "full" };

export interface CatalogView {
  index: RoleIndex;
  /** Every change up to this revision is reflected. */
  revision: Revision;
}

export interface UserView extends CatalogView {
  /** The user's roles, sorted by name. */
  roles: IndexedRole[];
}

export interface Reader {
  catalog(consistency: Consistency): Promise<CatalogView>;
  user(userId: string, consistency: Consistency): Promise<UserView>;
  /** Forget what is known of a user's roles: this process has just changed them. */
  invalidateUser(userId: string): void;
}

export function createDatabaseReader(store: Store): Reader {
  const catalog = async (): Promise<CatalogView> => {
    const loaded = await store.loadCatalog();
    return { index: new RoleIndex(loaded), revision: loaded.revision };
  };
  return {
    catalog,
    async user(userId) {
      const [view, userRoles] = await Promise.all([catalog(), store.userRoles(userId)]);
      // Each read reflects everything up to its own revision; together, everything up to the smaller one.
      return {
        index: view.index,
        roles: view.index.rolesOf(userRoles.roleIds),
        revision: Math.min(view.revision, userRoles.revision),
      };
    },
    invalidateUser() {},
  };
}
