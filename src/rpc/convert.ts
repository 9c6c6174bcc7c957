// Domain values → protobuf-es messages. Only shapes change here; every decision was made in the domain.

import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  AuditEventSchema,
  ChangeKind as ChangeKindEnum,
  type CheckPermissionResponse,
  CheckPermissionResponseSchema,
  PermissionSchema,
  ProfileSchema,
  RoleSchema,
  type WatchChangesResponse,
  WatchChangesResponseSchema,
} from "../../gen/flip/authz/v1/authz_pb.ts";
import type { ChangeOutput, CheckOutput, Profile, RoleOutput } from "../authz/authz.ts";
import type { AuditEvent, ChangeKind, PermissionRecord } from "../authz/store.ts";

export function checkResponse(output: CheckOutput): CheckPermissionResponse {
  return create(CheckPermissionResponseSchema, output);
}

export function profileMessage(profile: Profile) {
  return create(ProfileSchema, {
    userId: profile.userId,
    name: profile.name,
    organisation: profile.organisation,
    roles: profile.roles,
    permissions: profile.permissions,
    ...(profile.createdAt && { createdAt: timestampFromDate(profile.createdAt) }),
    ...(profile.updatedAt && { updatedAt: timestampFromDate(profile.updatedAt) }),
  });
}

export function roleMessage(role: RoleOutput) {
  return create(RoleSchema, role);
}

export function permissionMessage(permission: PermissionRecord) {
  return create(PermissionSchema, {
    id: permission.id,
    name: permission.name,
    description: permission.description,
  });
}

export function auditEventMessage(event: AuditEvent) {
  return create(AuditEventSchema, {
    id: event.id,
    action: event.action,
    userId: event.userId,
    modifiedByUserId: event.modifiedByUserId,
    timestamp: timestampFromDate(event.timestamp),
  });
}

const KINDS: Record<ChangeKind, ChangeKindEnum> = {
  user_roles: ChangeKindEnum.USER_ROLES,
  role_permissions: ChangeKindEnum.ROLE_PERMISSIONS,
  profile: ChangeKindEnum.PROFILE,
};

export function changeMessage(change: ChangeOutput): WatchChangesResponse {
  return create(WatchChangesResponseSchema, {
    revision: change.revision,
    kind: KINDS[change.kind],
    userId: change.userId,
  });
}
