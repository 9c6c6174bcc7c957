// The cold path's load generator (bench/raw-h2.ts) against the real service over a real socket: what it
// counts as a success and as a failure must be what a gRPC client would see, or the bench's figures lie.

import { randomUUID } from "node:crypto";
import { create, toBinary } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { grpcFrame } from "../../bench/harness.ts";
import { RawGrpcConnection } from "../../bench/raw-h2.ts";
import {
  AuthzService,
  CheckPermissionRequestSchema,
  CheckPermissionsRequestSchema,
} from "../../gen/flip/authz/v1/authz_pb.ts";
import { NIL_UUID } from "../../src/authz/ids.ts";
import { methodPath } from "../../src/rpc/method-name.ts";
import { type AppDatabase, createSqliteDatabase, startTestApp, type TestApp } from "../helpers/app.ts";

const RESEARCHER = "6f0c1f4e-2a53-4c7e-9d8b-0a1b2c3d4e5f";

const check = (request: { userId: string; permission: string }) =>
  grpcFrame(toBinary(CheckPermissionRequestSchema, create(CheckPermissionRequestSchema, request)));
const hot = { userId: RESEARCHER, permission: "CAN_CREATE_PROJECTS" };

function call(connection: RawGrpcConnection, body: Buffer): Promise<{ ok: boolean; why: string }> {
  return new Promise((resolve) => connection.call(body, (ok, why) => resolve({ ok, why })));
}

describe("bench/raw-h2.ts against the service", () => {
  let db: AppDatabase;
  let t: TestApp;
  let port: number;

  beforeAll(async () => {
    db = await createSqliteDatabase();
    t = await startTestApp(db.url);
    port = t.app.grpcPort;
    await t.app.authz.assignRole(RESEARCHER, "Researcher", NIL_UUID);
  });
  afterAll(async () => {
    await t?.close();
    await db?.close();
  });

  it("counts a call as a success exactly when a gRPC client gets an answer", async () => {
    const connection = await RawGrpcConnection.connect(port, methodPath(AuthzService.method.checkPermission));
    const requests = [
      { userId: RESEARCHER, permission: "CAN_CREATE_PROJECTS" },
      { userId: RESEARCHER, permission: "CAN_MANAGE_USERS" }, // denied is an answer
      { userId: randomUUID(), permission: "CAN_CREATE_PROJECTS" }, // nobody's roles: an answer
      { userId: "not-a-uuid", permission: "CAN_CREATE_PROJECTS" }, // INVALID_ARGUMENT
      { userId: RESEARCHER, permission: "NO_SUCH_PERMISSION" }, // NOT_FOUND
      { userId: "", permission: "" }, // INVALID_ARGUMENT
    ];
    try {
      const raw = await Promise.all(requests.map((request) => call(connection, check(request))));
      const client = await Promise.all(
        requests.map((request) =>
          t.client.call(AuthzService.method.checkPermission, request).then(
            () => ({ ok: true, why: "" }),
            () => ({ ok: false, why: "trailers-only answer (an error status)" }),
          ),
        ),
      );
      expect(raw).toEqual(client);
      expect(raw.filter((answer) => answer.ok)).toHaveLength(3);
      // Bytes that are no message at all: an error status too.
      expect(await call(connection, Buffer.from([0, 0, 0, 0, 3, 0xff, 0xff, 0xff]))).toEqual({
        ok: false,
        why: "trailers-only answer (an error status)",
      });
    } finally {
      connection.close();
    }
  });

  // Past 64 KiB each way, so the windows are spent and topped up (the service tolerates a sender past its
  // window, so this shows the calls carried and answered, not that the send window is kept).
  it("carries megabytes each way on one connection, every call answered", async () => {
    const connection = await RawGrpcConnection.connect(
      port,
      methodPath(AuthzService.method.checkPermissions),
    );
    // 100 checks a call, about 5.8 KB: 400 calls send 2.3 MB and get well over 1 MB back.
    const checks = Array.from({ length: 100 }, (_, i) => ({
      userId: i % 2 === 0 ? RESEARCHER : randomUUID(),
      permission: "CAN_CREATE_PROJECTS",
    }));
    const body = grpcFrame(
      toBinary(CheckPermissionsRequestSchema, create(CheckPermissionsRequestSchema, { checks })),
    );
    try {
      const answers = await Promise.all(Array.from({ length: 400 }, () => call(connection, body)));
      expect(answers.filter((answer) => answer.ok)).toHaveLength(400);
    } finally {
      connection.close();
    }
  });

  it("fails the calls in flight when the server goes away, and every call after", async () => {
    const other = await startTestApp(db.url);
    const connection = await RawGrpcConnection.connect(
      other.app.grpcPort,
      methodPath(AuthzService.method.checkPermission),
    );
    expect(await call(connection, check(hot))).toEqual({ ok: true, why: "" });
    const pending = Array.from({ length: 20 }, () => call(connection, check(hot)));
    await other.close();
    // Each ends: answered before the shutdown reached it, or failed saying why.
    for (const answer of await Promise.all(pending)) {
      if (answer.ok) expect(answer.why).toBe("");
      else expect(answer.why).not.toBe("");
    }
    const after = await call(connection, check(hot));
    expect(after.ok).toBe(false);
    expect(after.why).toMatch(/^(GOAWAY|connection closed|socket)/);
    connection.close();
  });
});
