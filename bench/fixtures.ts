// Databases and request bodies the scenarios share: a migrated database (PostgreSQL when it answers, else a
// SQLite file) whose one "hot" user holds FLIP's Researcher role, and CheckPermission bodies for h2load.

import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { create, toBinary, toJsonString } from "@bufbuild/protobuf";
import { CheckPermissionRequestSchema } from "../gen/flip/authz/v1/authz_pb.ts";
import { ROLES } from "../src/authz/flip.ts";
import { NIL_UUID } from "../src/authz/ids.ts";
import { loadConfig } from "../src/config.ts";
import { openStore } from "../src/store/index.ts";
import { grpcFrame, tmpDirectory } from "./harness.ts";
import type { BenchContext } from "./report.ts";

export const HOT_USER = "6f0c1f4e-2a53-4c7e-9d8b-0a1b2c3d4e5f";
export const HOT_PERMISSION = "CAN_CREATE_PROJECTS";
export const RESEARCHER_ROLE_ID = roleId("Researcher");
export const VIEWER_ROLE_ID = roleId("Viewer");

function roleId(name: string): string {
  const role = ROLES.find((r) => r.name === name);
  if (!role) throw new Error(`FLIP has no role ${name}`);
  return role.id;
}

export interface BenchDatabase {
  url: string;
  kind: "PostgreSQL" | "SQLite";
  drop(): Promise<void>;
}

/** A fresh migrated database with the hot user holding Researcher (which carries HOT_PERMISSION). */
export async function hotDatabase(context: BenchContext, label: string): Promise<BenchDatabase> {
  let database: BenchDatabase;
  if (context.postgres) {
    const created = await context.postgres.createDatabase(label);
    database = { url: created.url, kind: "PostgreSQL", drop: created.drop };
  } else {
    database = { url: `sqlite:${join(tmpDirectory(), `${label}.db`)}`, kind: "SQLite", drop: async () => {} };
  }
  const store = await openStore(loadConfig({ DATABASE_URL: database.url }).database, { migrate: true });
  try {
    await store.assignRole(HOT_USER, RESEARCHER_ROLE_ID, NIL_UUID);
  } finally {
    await store.close();
  }
  return database;
}

export interface CheckBody {
  /** The protobuf message, for checkOnce. */
  bytes: Uint8Array;
  /** A file holding the gRPC frame, for h2load -d. */
  grpcFile: string;
  /** A file holding the Connect JSON body. */
  jsonFile: string;
}

/** A CheckPermission request written out for h2load. */
export function checkBody(
  name: string,
  fields: { userId: string; permission: string; fullyConsistent?: boolean },
) {
  const request = create(CheckPermissionRequestSchema, fields);
  const bytes = toBinary(CheckPermissionRequestSchema, request);
  const grpcFile = join(tmpDirectory(), `${name}.grpc`);
  const jsonFile = join(tmpDirectory(), `${name}.json`);
  writeFileSync(grpcFile, grpcFrame(bytes));
  writeFileSync(jsonFile, toJsonString(CheckPermissionRequestSchema, request));
  return { bytes, grpcFile, jsonFile } satisfies CheckBody;
}

export const GRPC_HEADERS = ["content-type: application/grpc", "te: trailers"];
