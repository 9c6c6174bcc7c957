// MikroORM entities over FLIP's six tables (names, columns and types exactly as shared/spec/SCHEMA.md) and
// flip-authz's own change-log tables. The DDL itself lives in the committed migrations, not in these.

import { defineEntity, p } from "@mikro-orm/core";

export const Permission = defineEntity({
  name: "Permission",
  tableName: "permission",
  properties: {
    id: p.uuid().primary(),
    name: p.string().fieldName("permission_name").columnType("varchar"),
    description: p.string().fieldName("permission_description").columnType("varchar"),
  },
});

export const Role = defineEntity({
  name: "Role",
  tableName: "roles",
  properties: {
    id: p.uuid().primary(),
    name: p.string().columnType("varchar").unique(),
    description: p.string().columnType("varchar"),
    createdAt: p.datetime().fieldName("created_at"),
    updatedAt: p.datetime().fieldName("updated_at"),
  },
});

/** FLIP keeps no unique constraint on (role_id, permission_id): writers must check before inserting. */
export const RolePermission = defineEntity({
  name: "RolePermission",
  tableName: "role_permission",
  properties: {
    id: p.uuid().primary(),
    roleId: p.uuid().fieldName("role_id"),
    permissionId: p.uuid().fieldName("permission_id"),
  },
});

/** user_id is a Cognito `sub`: no users table, no foreign key on it. */
export const UserRole = defineEntity({
  name: "UserRole",
  tableName: "user_role",
  properties: {
    userId: p.uuid().fieldName("user_id").primary(),
    roleId: p.uuid().fieldName("role_id").primary(),
  },
});

export const UserProfile = defineEntity({
  name: "UserProfile",
  tableName: "user_profile",
  properties: {
    userId: p.uuid().fieldName("user_id").primary(),
    name: p.string().length(255),
    organisation: p.string().length(255),
    createdAt: p.datetime().fieldName("created_at"),
    updatedAt: p.datetime().fieldName("updated_at"),
  },
});

export const UserAudit = defineEntity({
  name: "UserAudit",
  tableName: "users_audit",
  properties: {
    id: p.uuid().primary(),
    action: p.string().columnType("varchar"),
    userId: p.uuid().fieldName("user_id"),
    modifiedByUserId: p.uuid().fieldName("modified_by_user_id"),
    timestamp: p.datetime(),
  },
});

/** One row per committed change, written by triggers (so plain-SQL writers are seen too). */
export const ChangeLogEntry = defineEntity({
  name: "ChangeLogEntry",
  tableName: "authz_change_log",
  properties: {
    revision: p.bigint("number").primary(),
    kind: p.text(),
    userId: p.uuid().fieldName("user_id").nullable(),
    changedAt: p.datetime().fieldName("changed_at"),
  },
});

/** The single-row counter the triggers bump: its row lock orders revisions by commit. */
export const RevisionCounter = defineEntity({
  name: "RevisionCounter",
  tableName: "authz_revision",
  properties: {
    id: p.integer().primary(),
    revision: p.bigint("number"),
  },
});

export const ENTITIES = [
  Permission,
  Role,
  RolePermission,
  UserRole,
  UserProfile,
  UserAudit,
  ChangeLogEntry,
  RevisionCounter,
] as const;
