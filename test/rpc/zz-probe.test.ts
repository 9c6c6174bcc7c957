import { randomUUID } from "node:crypto";
import { it } from "vitest";
import { AuthzService } from "../../gen/flip/authz/v1/authz_pb.ts";
import { createPostgresDatabase, createSqliteDatabase, startTestApp } from "../helpers/app.ts";

const m = AuthzService.method;
it("probe", async () => {
  for (const make of [createSqliteDatabase, createPostgresDatabase]) {
    const db = await make();
    const t = await startTestApp(db.url);
    const u = randomUUID();
    const show = async (label: string, p: Promise<unknown>) =>
      console.log(
        db.kind,
        label,
        JSON.stringify(
          await p.then(
            (v) => ({ ok: v }),
            (e) => ({ code: e.code, details: e.details }),
          ),
          (_k, v) => (typeof v === "bigint" ? String(v) : v),
        ).slice(0, 300),
      );
    await show("assign NUL", t.client.call(m.assignRole, { userId: u, role: "Ad\0min" }));
    await show("set NUL", t.client.call(m.setUserRoles, { userId: u, roles: ["Viewer", "x\0"] }));
    await show("check NUL", t.client.call(m.checkPermission, { userId: u, permission: "CAN\0" }));
    await show("assign ws", t.client.call(m.assignRole, { userId: u, role: " Admin" }));
    await show("assign uuid unknown", t.client.call(m.assignRole, { userId: u, role: randomUUID() }));
    await show(
      "watch future",
      t.client.call(m.checkPermission, {
        userId: u,
        permission: "CAN_MANAGE_USERS",
        atLeastAsFresh: "999999999999999",
      }),
    );
    await show(
      "audit token ok shape",
      t.client.call(m.listAuditEvents, {
        pageToken: Buffer.from(JSON.stringify(["2020-01-01T00:00:00Z", "not-uuid"])).toString("base64url"),
      }),
    );
    await show(
      "audit token 1",
      t.client.call(m.listAuditEvents, {
        pageToken: Buffer.from(JSON.stringify(["1", randomUUID()])).toString("base64url"),
      }),
    );
    await show(
      "profile name only NUL-free emoji org",
      t.client.call(m.updateProfile, { userId: u, name: "\uD800" }),
    );
    await show("assign 10k", t.client.call(m.assignRole, { userId: u, role: "x".repeat(10000) }));
    await show(
      "after",
      t.client.call(m.listPermissions, {}).then(() => "ok"),
    );
    await t.close();
    await db.close();
  }
}, 60000);
