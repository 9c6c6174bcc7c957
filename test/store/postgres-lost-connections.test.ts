// PostgreSQL ending the store's connections as its transactions start (a restart, a failover,
// pg_terminate_backend): Kysely never releases a client whose BEGIN failed, so without
// src/store/lost-clients.ts each such client held one of the pool's ten slots for good, and close() (the
// shutdown) waited for them for ever. The store must get its connections back and still close.

import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UnavailableError } from "../../src/authz/errors.ts";
import type { Store } from "../../src/authz/store.ts";
import { openStore } from "../../src/store/index.ts";
import { LOST_CLIENT_GRACE_MS } from "../../src/store/lost-clients.ts";
import { ADMIN_URL, createTestDatabase, postgresAvailable, type TestDatabase } from "../helpers/postgres.ts";

describe.skipIf(!postgresAvailable)("PostgreSQL: connections ended under the store", () => {
  let db: TestDatabase;
  let admin: pg.Client;

  beforeAll(async () => {
    db = await createTestDatabase();
    admin = new pg.Client({ connectionString: ADMIN_URL });
    await admin.connect();
  });
  afterAll(async () => {
    await admin?.end();
    await db?.drop();
  });

  const terminate = () =>
    admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", [db.name]);
  /** Snapshot reads (each an em.transactional), all at once. */
  const snapshots = (store: Store, n: number) =>
    Promise.allSettled(Array.from({ length: n }, () => store.loadCatalog()));

  it("transactions failing on ended connections give their clients back: reads work again and close() returns", async () => {
    const store = await openStore({ kind: "postgres", url: db.url }, { migrate: true });
    let closed = false;
    try {
      let failed = 0;
      // Until more transactions have failed on ended connections than the pool has slots (10).
      for (let round = 0; round < 10 && failed <= 10; round++) {
        // Idle clients in the pool, then their backends ended, then transactions begun on them at once.
        expect((await snapshots(store, 8)).every((result) => result.status === "fulfilled")).toBe(true);
        await terminate();
        const results = await snapshots(store, 8);
        for (const result of results) {
          if (result.status === "rejected") {
            expect(result.reason).toBeInstanceOf(UnavailableError);
            failed++;
          }
        }
      }
      expect(failed).toBeGreaterThan(10);
      await new Promise((resolve) => setTimeout(resolve, LOST_CLIENT_GRACE_MS + 500));
      // Every slot is usable again: twelve reads at once all succeed (a lost slot would time them out).
      const again = await snapshots(store, 12);
      expect(again.filter((result) => result.status === "rejected")).toEqual([]);
      const closing = store.close().then(() => {
        closed = true;
        return "closed";
      });
      const timeout = new Promise((resolve) => setTimeout(() => resolve("still waiting"), 5_000));
      expect(await Promise.race([closing, timeout])).toBe("closed");
    } finally {
      if (!closed) void store.close();
    }
  }, 40_000);
});
