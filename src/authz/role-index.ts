// The role→permission map in memory, indexed for the check hot path: references resolve with one Map
// lookup, and "which of these roles carry this permission" is a Set lookup per role.

import { isUuid } from "./ids.ts";
import type { Catalog, PermissionRecord, Revision, RoleName, RoleRecord } from "./store.ts";

export interface IndexedRole {
  id: string;
  name: string;
  description: string;
  permissionIds: ReadonlySet<string>;
  /** Permission names, sorted. */
  permissionNames: string[];
}

const byName = (a: { name: string }, b: { name: string }) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

/** Exact name first, then case-insensitive; a UUID (any case) by id. */
function resolver<T extends { id: string; name: string }>(
  items: readonly T[],
): (ref: string) => T | undefined {
  const byId = new Map(items.map((item) => [item.id, item]));
  const exact = new Map(items.map((item) => [item.name, item]));
  const folded = new Map<string, T>();
  for (const item of items) {
    const key = item.name.toLowerCase();
    if (!folded.has(key)) folded.set(key, item);
  }
  return (ref) => {
    if (isUuid(ref)) return byId.get(ref.toLowerCase());
    return exact.get(ref) ?? folded.get(ref.toLowerCase());
  };
}

export class RoleIndex {
  readonly revision: Revision;
  /** Sorted by name. */
  readonly roles: IndexedRole[];
  /** Sorted by name. */
  readonly permissions: PermissionRecord[];
  readonly #rolesById: Map<string, IndexedRole>;
  readonly #permissionsById: Map<string, PermissionRecord>;
  readonly #resolveRole: (ref: string) => IndexedRole | undefined;
  readonly #resolvePermission: (ref: string) => PermissionRecord | undefined;

  constructor(catalog: Catalog) {
    this.revision = catalog.revision;
    this.permissions = [...catalog.permissions].sort(byName);
    this.#permissionsById = new Map(this.permissions.map((p) => [p.id, p]));
    this.roles = catalog.roles.map((role: RoleRecord) => {
      const permissionIds = new Set(role.permissionIds.filter((id) => this.#permissionsById.has(id)));
      const permissionNames = [...permissionIds]
        .map((id) => this.#permissionsById.get(id)?.name ?? "")
        .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
      return { id: role.id, name: role.name, description: role.description, permissionIds, permissionNames };
    });
    this.roles.sort(byName);
    this.#rolesById = new Map(this.roles.map((r) => [r.id, r]));
    this.#resolveRole = resolver(this.roles);
    this.#resolvePermission = resolver(this.permissions);
  }

  resolveRole(ref: string): IndexedRole | undefined {
    return this.#resolveRole(ref);
  }

  resolvePermission(ref: string): PermissionRecord | undefined {
    return this.#resolvePermission(ref);
  }

  role(id: string): IndexedRole | undefined {
    return this.#rolesById.get(id);
  }

  /** The user's roles known to this index, sorted by name. */
  rolesOf(roleIds: readonly string[]): IndexedRole[] {
    const roles: IndexedRole[] = [];
    for (const id of roleIds) {
      const role = this.#rolesById.get(id);
      if (role) roles.push(role);
    }
    return roles.sort(byName);
  }

  /** Names of the given roles (sorted by name) that carry the permission. */
  grantedBy(roles: readonly IndexedRole[], permissionId: string): string[] {
    const names: string[] = [];
    for (const role of roles) if (role.permissionIds.has(permissionId)) names.push(role.name);
    return names;
  }

  /** The union of the roles' permission names, sorted. */
  effectivePermissions(roles: readonly IndexedRole[]): string[] {
    const names = new Set<string>();
    for (const role of roles) for (const name of role.permissionNames) names.add(name);
    return [...names].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }
}

export function roleNames(roles: readonly RoleName[]): string[] {
  return [...roles].sort(byName).map((role) => role.name);
}
