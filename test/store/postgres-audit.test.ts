// Audit paging on PostgreSQL, whose timestamps (written by FLIP's Python) carry microseconds while a page
// cursor carries milliseconds: paging one row at a time still yields every row exactly once, in order.

import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AuditCursor, Store } from "../../src/authz/store.ts";
import { openStore } from "../../src/store/index.ts";
import { createTestDatabase, postgresAvailable, type TestDatabase } from "../helpers/postgres.ts";
import { withPg } from "./fixtures.ts";

describe.skipIf(!postgresAvailable)("PostgreSQL: audit paging across sub-millisecond timestamps", () => {
  let db: TestDatabase;
  let store: Store;

  beforeAll(async () => {
    db = await createTestDatabase();
    store = await openStore({ kind: "postgres", url: db.url }, { migrate: true });
  });
  afterAll(async () => {
    await store?.close();
    await db?.drop();
  });

  it("pages one row at a time through rows sharing a millisecond", async () => {
    const user = randomUUID();
    const times = [
      "2024-03-01 10:00:00.123999+00",
      "2024-03-01 10:00:00.123001+00",
      "2024-03-01 10:00:00.123500+00",
      "2024-03-01 11:00:00.123500+01", // the same instant as 10:00:00.1235 UTC, another zone
      "2024-03-01 10:00:00.122999+00",
      "2024-03-01 10:00:00.124+00",
    ];
    const ids = times.map(() => randomUUID());
    await withPg(db.url, async (client) => {
      for (const [i, at] of times.entries()) {
        await client.query("INSERT INTO users_audit VALUES ($1, $2, $3, $3, $4)", [
          ids[i],
          `A${i}`,
          user,
          at,
        ]);
      }
    });
    const seen: string[] = [];
    let before: AuditCursor | undefined;
    for (let page = 0; page < 10; page++) {
      const result = await store.listAudit(
        before ? { userId: user, limit: 1, before } : { userId: user, limit: 1 },
      );
      seen.push(...result.events.map((e) => e.id));
      if (!result.next) break;
      before = result.next;
    }
    // Newest millisecond first; inside .123 the id decides (descending); .122 last.
    const inside = [ids[0], ids[1], ids[2], ids[3]].map(String).sort().reverse();
    expect(seen).toEqual([ids[5], ...inside, ids[4]]);
    const all = await store.listAudit({ userId: user, limit: 10 });
    expect(all.events.map((e) => e.timestamp.toISOString())).toEqual([
      "2024-03-01T10:00:00.124Z",
      "2024-03-01T10:00:00.123Z",
      "2024-03-01T10:00:00.123Z",
      "2024-03-01T10:00:00.123Z",
      "2024-03-01T10:00:00.123Z",
      "2024-03-01T10:00:00.122Z",
    ]);
  });
});
