// UpstreamSource, the follower's ReadSource, against a real upstream on a SQLite file: reads say which
// revision they reflect, and a user's role names (all the contract gives) are matched against a catalog
// of the same moment, even when roles were renamed or their names swapped since the catalog was loaded.

import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NIL_UUID } from "../../src/authz/ids.ts";
import { loadConfig } from "../../src/config.ts";
import { openUpstream, type Upstream } from "../../src/upstream/index.ts";
import { type AppDatabase, createSqliteDatabase, startTestApp, type TestApp } from "../helpers/app.ts";

const RESEARCHER_ID = "10b64ed0-bc90-4c01-9cc3-933c704905c1";
const VIEWER_ID = "cdee79c9-a5e1-4b9e-a315-1ec2f3d29efe";
const silent = { error() {}, warn() {}, info() {} };

describe("UpstreamSource", () => {
  let db: AppDatabase;
  let upstream: TestApp;
  let source: Upstream;

  beforeAll(async () => {
    db = await createSqliteDatabase();
    upstream = await startTestApp(db.url);
    const config = loadConfig({ AUTHZ_UPSTREAM: upstream.grpcTarget });
    if (!config.upstream) throw new Error("no upstream");
    source = openUpstream(config.upstream, silent);
  });
  afterAll(async () => {
    source?.close();
    await upstream?.close();
    await db?.close();
  });

  it("reads the catalog with the revision it reflects, as fresh as asked", async () => {
    const written = await upstream.app.authz.assignRole(randomUUID(), "Viewer", NIL_UUID);
    const catalog = await source.source.loadCatalog({ kind: "fresh", atLeast: Number(written.writtenAt) });
    expect(catalog.revision).toBeGreaterThanOrEqual(Number(written.writtenAt));
    expect(catalog.roles.map((role) => role.name).sort()).toEqual(["Admin", "Researcher", "Viewer"]);
    const researcher = catalog.roles.find((role) => role.id === RESEARCHER_ID);
    const createProjects = catalog.permissions.find((p) => p.name === "CAN_CREATE_PROJECTS");
    expect(researcher?.permissionIds).toEqual([createProjects?.id]);
  });

  it("a user with no rows: no roles, as of at least the revision asked", async () => {
    const latest = await upstream.app.store.currentRevision();
    expect(await source.source.userRoles(randomUUID(), { kind: "fresh", atLeast: latest })).toEqual({
      roleIds: [],
      revision: latest,
    });
    expect(await source.source.getProfile(randomUUID(), { kind: "fresh", atLeast: latest })).toEqual({
      profile: null,
      revision: latest,
    });
  });

  it("a profile comes back as stored, with its read_at", async () => {
    const user = randomUUID();
    const written = await upstream.app.authz.updateProfile(
      user,
      { name: "Ada", organisation: "KCL" },
      NIL_UUID,
    );
    const read = await source.source.getProfile(user, { kind: "fresh", atLeast: Number(written.revision) });
    expect(read.revision).toBeGreaterThanOrEqual(Number(written.revision));
    expect(read.profile).toMatchObject({ userId: user, name: "Ada", organisation: "KCL" });
    expect(read.profile?.createdAt).toBeInstanceOf(Date);
  });

  it("role names swapped after the catalog was loaded still map to the right role ids", async () => {
    await source.source.loadCatalog();
    const user = randomUUID();
    await upstream.app.authz.assignRole(user, "Viewer", NIL_UUID);
    // Swap the names of Researcher and Viewer by plain SQL; the source's catalog still has the old ones.
    await db.sql("UPDATE roles SET name = 'Swapping' WHERE id = ?", [RESEARCHER_ID]);
    await db.sql("UPDATE roles SET name = 'Researcher' WHERE id = ?", [VIEWER_ID]);
    await db.sql("UPDATE roles SET name = 'Viewer' WHERE id = ?", [RESEARCHER_ID]);
    try {
      const latest = await upstream.app.store.currentRevision();
      // GetProfile says "Researcher" (the viewer role's new name) with no permissions; the old catalog
      // would map that name to the role carrying CAN_CREATE_PROJECTS.
      const roles = await source.source.userRoles(user, { kind: "fresh", atLeast: latest });
      expect(roles.roleIds).toEqual([VIEWER_ID]);
      expect(roles.revision).toBeGreaterThanOrEqual(latest);
    } finally {
      await db.sql("UPDATE roles SET name = 'Swapping' WHERE id = ?", [VIEWER_ID]);
      await db.sql("UPDATE roles SET name = 'Researcher' WHERE id = ?", [RESEARCHER_ID]);
      await db.sql("UPDATE roles SET name = 'Viewer' WHERE id = ?", [VIEWER_ID]);
    }
  });
});
