// Writes FLIP's predefined permissions, roles and role-permission pairs (src/authz/flip.ts). Keyed on id:
// refreshes names and descriptions, adds missing pairs, never removes anything, and writes nothing when the
// rows are already right (every write bumps a revision and wakes every cache).

import { randomUUID } from "node:crypto";
import type { SqlEntityManager } from "@mikro-orm/sql";
import { PERMISSIONS, ROLES } from "../authz/flip.ts";
import { Permission, Role, RolePermission } from "./entities.ts";

export interface SeedResult {
  /** Rows inserted or updated. */
  written: number;
}

/** Runs the seed in one transaction on a fresh fork of `em`. */
export async function seed(em: SqlEntityManager): Promise<SeedResult> {
  return em.fork().transactional(async (tx) => {
    let written = 0;
    const now = new Date();

    const permissionIds = Object.values(PERMISSIONS) as string[];
    const permissions = new Map(
      (await tx.find(Permission, { id: { $in: permissionIds } })).map((row) => [row.id, row]),
    );
    for (const [name, id] of Object.entries(PERMISSIONS)) {
      const row = permissions.get(id);
      if (!row) {
        tx.create(Permission, { id, name, description: name });
        written++;
      } else if (row.name !== name || row.description !== name) {
        row.name = name;
        row.description = name;
        written++;
      }
    }

    const roles = new Map(
      (await tx.find(Role, { id: { $in: ROLES.map((r) => r.id) } })).map((row) => [row.id, row]),
    );
    for (const role of ROLES) {
      const row = roles.get(role.id);
      if (!row) {
        tx.create(Role, {
          id: role.id,
          name: role.name,
          description: role.description,
          createdAt: now,
          updatedAt: now,
        });
        written++;
      } else if (row.name !== role.name || row.description !== role.description) {
        row.name = role.name;
        row.description = role.description;
        row.updatedAt = now;
        written++;
      }
    }
    // role_permission carries plain id columns, so the unit of work cannot order these inserts after the
    // roles and permissions they point at: flush those first.
    await tx.flush();

    const pairs = await tx.find(RolePermission, { roleId: { $in: ROLES.map((r) => r.id) } });
    const present = new Set(
      pairs.map((pair) => `${pair.roleId.toLowerCase()}:${pair.permissionId.toLowerCase()}`),
    );
    for (const role of ROLES) {
      for (const permission of role.permissions) {
        const permissionId = PERMISSIONS[permission];
        if (present.has(`${role.id}:${permissionId}`)) continue;
        tx.create(RolePermission, { id: randomUUID(), roleId: role.id, permissionId });
        present.add(`${role.id}:${permissionId}`);
        written++;
      }
    }
    await tx.flush();
    return { written };
  });
}
