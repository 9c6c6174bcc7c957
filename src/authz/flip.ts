// FLIP's predefined permissions and roles, with FLIP's own UUIDs (shared/spec/SCHEMA.md). The seed writes
// them; the domain needs only the Admin role's id, for the "someone holds Admin" invariant.

export const PERMISSIONS = {
  CAN_ACCESS_ADMIN_PANEL: "6d1da2d7-e510-488c-9085-8608cd817256",
  CAN_APPROVE_PROJECTS: "e2703e64-0186-4bc1-ac40-ba4ef63255ec",
  CAN_CREATE_PROJECTS: "1140ab45-fefb-4a3b-b350-90dd84f9be4b",
  CAN_DELETE_ANY_PROJECT: "fa2f251f-9d4d-4ba7-8dd1-becd9230dac0",
  CAN_MANAGE_DEPLOYMENTS: "4c9769ed-a939-4c73-b320-139f574368c3",
  CAN_MANAGE_PROJECTS: "fc2f242e-848f-4983-ab14-fd3c5604535d",
  CAN_MANAGE_SITE_BANNER: "5a6c4185-6c90-4b26-bc87-f9436e2042b8",
  CAN_MANAGE_USERS: "f6dbd04e-d1ef-4cb7-84c2-c29fb35cf83b",
  CAN_UNSTAGE_PROJECTS: "a695be07-23c7-448d-a5df-36c3f63ca29d",
} as const;

export type PermissionName = keyof typeof PERMISSIONS;

export interface PredefinedRole {
  id: string;
  name: string;
  description: string;
  permissions: readonly PermissionName[];
}

export const ADMIN_ROLE_ID = "64d3145b-034c-4328-b637-8eb54313b7c5";

export const ROLES: readonly PredefinedRole[] = [
  {
    id: ADMIN_ROLE_ID,
    name: "Admin",
    description: "A role for administrators.",
    permissions: Object.keys(PERMISSIONS) as PermissionName[],
  },
  {
    id: "10b64ed0-bc90-4c01-9cc3-933c704905c1",
    name: "Researcher",
    description: "A researcher role, used as the default role with minimal permissions.",
    permissions: ["CAN_CREATE_PROJECTS"],
  },
  {
    id: "cdee79c9-a5e1-4b9e-a315-1ec2f3d29efe",
    name: "Viewer",
    description: "Read-only access to assigned projects. Cannot create, edit, or delete resources.",
    permissions: [],
  },
];
