// Cache coherence on a SQLite file: the real app in this process (grpc-js client on a real socket), and
// FLIP's Python API writing plain SQL from another process. The store polls the revision counter every
// 200 ms, so another process's change must show after the next poll; this process's own writes at once.

import { randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ChangeKind, type WatchChangesResponse } from "../../gen/flip/authz/v1/authz_pb.ts";
import { startTestApp, type TestApp, take } from "../helpers/app.ts";
import {
  CAN_APPROVE_PROJECTS_ID,
  type Checker,
  checkOutcome,
  m,
  RESEARCHER_ID,
  reflected,
  VIEWER_ID,
} from "./replicas.ts";
import { type Statement, writeFromAnotherProcess } from "./sqlite-writer.ts";

/**
 * The poll interval is 200 ms; the bound leaves room for a machine the whole suite loads. Latency itself is
 * measured in bench/, never here.
 */
const PROPAGATION_MS = 2000;

const rev = (value: string) => {
  expect(value).toMatch(/^\d+$/);
  return Number(value);
};

describe("coherence on a SQLite file with a plain-SQL writer in another process", () => {
  let dir: string;
  let path: string;
  let t: TestApp;
  let app: Checker;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "authz-coherence-"));
    path = join(dir, "authz.db");
    t = await startTestApp(`sqlite:${path}`);
    app = { name: "app", client: t.client };
  });
  afterAll(async () => {
    await t?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Writes from another process; resolves to the commit time on this process's performance clock. */
  const write = async (statements: Statement[]) => {
    const committedAt = await writeFromAnotherProcess(path, statements);
    return performance.now() - (Date.now() - committedAt);
  };

  it("plain-SQL INSERT and DELETE on user_role are reflected by the next polls", async () => {
    const user = randomUUID();
    expect(await checkOutcome(app, user, "CAN_CREATE_PROJECTS")).toBe("denied"); // cached
    let since = await write([
      ["INSERT INTO user_role (user_id, role_id) VALUES (?, ?)", [user, RESEARCHER_ID]],
    ]);
    expect(await reflected(app, user, "CAN_CREATE_PROJECTS", "allowed", since)).toBeLessThan(PROPAGATION_MS);
    since = await write([["DELETE FROM user_role WHERE user_id = ?", [user]]]);
    expect(await reflected(app, user, "CAN_CREATE_PROJECTS", "denied", since)).toBeLessThan(PROPAGATION_MS);
  });

  it("a plain-SQL role_permission row and a new permission are reflected by the next polls", async () => {
    const viewer = randomUUID();
    await write([["INSERT INTO user_role (user_id, role_id) VALUES (?, ?)", [viewer, VIEWER_ID]]]);
    await reflected(app, viewer, "CAN_APPROVE_PROJECTS", "denied", performance.now(), { holdMs: 0 });
    let since = await write([
      [
        "INSERT INTO role_permission (id, role_id, permission_id) VALUES (?, ?, ?)",
        [randomUUID(), VIEWER_ID, CAN_APPROVE_PROJECTS_ID],
      ],
    ]);
    expect(await reflected(app, viewer, "CAN_APPROVE_PROJECTS", "allowed", since)).toBeLessThan(
      PROPAGATION_MS,
    );

    const name = `CAN_COHERE_${randomBytes(4).toString("hex").toUpperCase()}`;
    const permissionId = randomUUID();
    expect(await checkOutcome(app, viewer, name)).toBe(grpc.status.NOT_FOUND);
    since = await write([
      [
        "INSERT INTO permission (id, permission_name, permission_description) VALUES (?, ?, ?)",
        [permissionId, name, "added by FLIP"],
      ],
      [
        "INSERT INTO role_permission (id, role_id, permission_id) VALUES (?, ?, ?)",
        [randomUUID(), VIEWER_ID, permissionId],
      ],
    ]);
    expect(await reflected(app, viewer, name, "allowed", since)).toBeLessThan(PROPAGATION_MS);
  });

  it("WatchChanges delivers another process's changes once, in order, with kind and user", async () => {
    const base = await t.client.call(m.assignRole, { userId: randomUUID(), role: "Viewer" });
    const watchers = [0, 1].map(() => t.client.stream(m.watchChanges, { after: base.writtenAt }));
    const user = randomUUID();
    await write([
      ["INSERT INTO user_role (user_id, role_id) VALUES (?, ?)", [user, RESEARCHER_ID]],
      ["UPDATE roles SET description = 'changed by FLIP' WHERE id = ?", [VIEWER_ID]],
    ]);
    const own = await t.client.call(m.revokeRole, { userId: user, role: "Researcher" });
    const first = rev(base.writtenAt) + 1;
    const expected = [
      { revision: String(first), kind: ChangeKind.USER_ROLES, userId: user },
      { revision: String(first + 1), kind: ChangeKind.ROLE_PERMISSIONS, userId: "" },
      { revision: String(first + 2), kind: ChangeKind.USER_ROLES, userId: user },
    ];
    expect(own.writtenAt).toBe(String(first + 2));
    const results = await Promise.all(watchers.map((stream) => take(stream, 4, 1500)));
    for (const result of results) {
      expect(result.error).toBeUndefined();
      expect(
        result.messages.map((msg: WatchChangesResponse) => ({
          revision: msg.revision,
          kind: msg.kind,
          userId: msg.userId,
        })),
      ).toEqual(expected);
    }
  });

  it("AssignRole, then a check with at_least_as_fresh = written_at, is reflected on the first call", async () => {
    for (let i = 0; i < 5; i++) {
      const user = randomUUID();
      expect(await checkOutcome(app, user, "CAN_CREATE_PROJECTS")).toBe("denied"); // cached as no roles
      const assigned = await t.client.call(m.assignRole, { userId: user, role: "Researcher" });
      const answer = await t.client.call(m.checkPermission, {
        userId: user,
        permission: "CAN_CREATE_PROJECTS",
        atLeastAsFresh: assigned.writtenAt,
      });
      expect(answer.allowed).toBe(true);
      expect(rev(answer.checkedAt)).toBeGreaterThanOrEqual(rev(assigned.writtenAt));
      const revoked = await t.client.call(m.revokeRole, { userId: user, role: "Researcher" });
      const after = await t.client.call(m.checkPermission, {
        userId: user,
        permission: "CAN_CREATE_PROJECTS",
        atLeastAsFresh: revoked.writtenAt,
      });
      expect(after.allowed).toBe(false);
    }
  });
});
