// Change-log retention on both databases: pruneChanges deletes a gap-free prefix of the log older than the
// cutoff, never the newest entry; oldestRevision follows; WatchChanges from a pruned revision is refused
// with a clear message naming `after`, while after = oldest - 1 is still served in full. The code is
// INVALID_ARGUMENT since 58108f2 (API.md's status table has no OUT_OF_RANGE).

import { randomUUID } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ChangeKind } from "../../gen/flip/authz/v1/authz_pb.ts";
import { CHANGE_LOG_RETENTION_MS } from "../../src/app.ts";
import { storeSql } from "../../src/store/index.ts";
import {
  type AppDatabase,
  createPostgresDatabase,
  createSqliteDatabase,
  startTestApp,
  type TestApp,
  take,
} from "../helpers/app.ts";
import { postgresAvailable } from "../helpers/postgres.ts";
import { m } from "./replicas.ts";

const DAY_MS = 24 * 60 * 60 * 1000;

function retentionSuite(label: string, createDatabase: () => Promise<AppDatabase>, skip = false): void {
  describe.skipIf(skip)(`change-log retention on ${label}`, () => {
    let db: AppDatabase;
    let t: TestApp;
    const store = () => t.app.store;
    const sql = (query: string, params: unknown[] = []) => storeSql(store(), query, params);
    const revisions = async () =>
      (await sql("SELECT revision FROM authz_change_log ORDER BY revision")).map((row) =>
        Number(row.revision),
      );
    /** Dates a log entry as `ms` ago (as if written then). */
    const age = async (revision: number, ms: number) => {
      const at = new Date(Date.now() - ms);
      await sql("UPDATE authz_change_log SET changed_at = ? WHERE revision = ?", [
        db.kind === "postgres" ? at.toISOString() : at.getTime(),
        revision,
      ]);
    };
    const writes = async (n: number) => {
      for (let i = 0; i < n; i++) await t.client.call(m.assignRole, { userId: randomUUID(), role: "Viewer" });
    };

    beforeAll(async () => {
      db = await createDatabase();
      t = await startTestApp(db.url);
      await writes(6);
    });
    afterAll(async () => {
      await t?.close();
      await db?.close();
    });

    it("keeps seven days, in one constant", () => {
      expect(CHANGE_LOG_RETENTION_MS).toBe(7 * DAY_MS);
    });

    it("deletes entries older than the cutoff as a gap-free prefix, and again deletes nothing", async () => {
      const before = await revisions();
      const [r1, r2, r3, r4] = before;
      if (r4 === undefined || r1 === undefined || r2 === undefined || r3 === undefined)
        throw new Error("log");
      expect(await store().oldestRevision()).toBe(r1);
      // The first two are eight days old; the fourth too, but the third is recent: the fourth stays, so the
      // log never has a hole in it.
      await age(r1, 8 * DAY_MS);
      await age(r2, 8 * DAY_MS);
      await age(r4, 8 * DAY_MS);
      const cutoff = new Date(Date.now() - CHANGE_LOG_RETENTION_MS);
      expect(await store().pruneChanges(cutoff)).toBe(2);
      expect(await revisions()).toEqual(before.slice(2));
      expect(await store().oldestRevision()).toBe(r3);
      // Idempotent, also when replicas prune at once.
      expect(await Promise.all([store().pruneChanges(cutoff), store().pruneChanges(cutoff)])).toEqual([0, 0]);
      expect(await revisions()).toEqual(before.slice(2));
    });

    it("never deletes the newest entry, so oldest and current revisions stay meaningful", async () => {
      const current = await store().currentRevision();
      const kept = await revisions();
      const future = new Date(Date.now() + 60_000);
      expect(await store().pruneChanges(future)).toBe(kept.length - 1);
      expect(await revisions()).toEqual([current]);
      expect(await store().oldestRevision()).toBe(current);
      expect(await store().currentRevision()).toBe(current);
      expect(await store().pruneChanges(future)).toBe(0);
    });

    it("WatchChanges: after = oldest - 1 is served in full; older is refused and says what to do", async () => {
      await writes(2);
      await store().pruneChanges(new Date(Date.now() + 60_000));
      const oldest = await store().oldestRevision();
      expect(oldest).toBe(await store().currentRevision());

      const served = await take(t.client.stream(m.watchChanges, { after: String(oldest - 1) }), 2, 1000);
      expect(served.error).toBeUndefined();
      expect(served.messages.map((msg) => [msg.revision, msg.kind])).toEqual([
        [String(oldest), ChangeKind.USER_ROLES],
      ]);

      const refused = await take(t.client.stream(m.watchChanges, { after: String(oldest - 2) }), 1, 5000);
      expect(refused.messages).toEqual([]);
      expect(refused.error).toEqual({
        code: grpc.status.INVALID_ARGUMENT,
        details: `after: revision ${oldest - 2} is older than the change log keeps (oldest is ${oldest}); reload and watch from now`,
      });

      // From the newest kept revision: nothing to replay, then the next change live.
      const stream = t.client.stream(m.watchChanges, { after: String(oldest) });
      const next = take(stream, 1, 5000);
      await new Promise((resolve) => setTimeout(resolve, 200));
      await writes(1);
      expect((await next).messages.map((msg) => msg.revision)).toEqual([String(oldest + 1)]);
    });
  });
}

retentionSuite("a SQLite file", createSqliteDatabase);
retentionSuite("PostgreSQL", createPostgresDatabase, !postgresAvailable);
