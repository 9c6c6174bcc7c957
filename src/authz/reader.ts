// How the domain reads roles, permissions and profiles. The direct reader asks its source every time; the
// cached reader (cached-reader.ts) wraps it behind the same interface and answers from memory when it may.

import { type IndexedRole, RoleIndex } from "./role-index.ts";
import type { Consistency, ProfileRecord, ReadSource, Revision } from "./store.ts";

export type { Consistency } from "./store.ts";

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

export interface ProfileView {
  /** The user's profile row; null when there is none. */
  profile: ProfileRecord | null;
  /** Every change up to this revision is reflected. */
  revision: Revision;
}

export interface Reader {
  catalog(consistency: Consistency): Promise<CatalogView>;
  user(userId: string, consistency: Consistency): Promise<UserView>;
  profile(userId: string, consistency: Consistency): Promise<ProfileView>;
  /**
   * The same view without waiting, when memory may answer right now (a cache that holds the user and
   * follows the feed); undefined otherwise, and then `user` reads. Optional: the database reader has none.
   */
  userNow?(userId: string, consistency: Consistency): UserView | undefined;
  /** Forget what is known of a user's roles and profile: this process has just changed them. */
  invalidateUser(userId: string): void;
}

/** A reader that asks `source` (the database, or an upstream flip-authz) for every read. */
export function createDirectReader(source: ReadSource): Reader {
  const catalog = async (consistency: Consistency): Promise<CatalogView> => {
    const loaded = await source.loadCatalog(consistency);
    return { index: new RoleIndex(loaded), revision: loaded.revision };
  };
  return {
    catalog,
    async user(userId, consistency) {
      const [view, userRoles] = await Promise.all([
        catalog(consistency),
        source.userRoles(userId, consistency),
      ]);
      // Each read reflects everything up to its own revision; together, everything up to the smaller one.
      return {
        index: view.index,
        roles: view.index.rolesOf(userRoles.roleIds),
        revision: Math.min(view.revision, userRoles.revision),
      };
    },
    profile: (userId, consistency) => source.getProfile(userId, consistency),
    invalidateUser() {},
  };
}
