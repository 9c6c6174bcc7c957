// The cached reader over the real PostgreSQL change feed when its LISTEN connection is killed: it stops
// trusting its caches until the feed is back, including when the feed drops again while the reader is
// still reloading after the first resume.

import { randomUUID } from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CachedReader } from "../../src/authz/cached-reader.ts";
import { ChangeHub } from "../../src/authz/change-hub.ts";
import { CACHED, createDirectReader } from "../../src/authz/reader.ts";
import type { Store } from "../../src/authz/store.ts";
import { openStore } from "../../src/store/index.ts";
import { ADMIN_URL, createTestDatabase, postgresAvailable, type TestDatabase } from "../helpers/postgres.ts";
import { RESEARCHER_ID } from "./replicas.ts";

async function until(
  probe: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe.skipIf(!postgresAvailable)("coherence: the cached reader when the LISTEN connection drops", () => {
  let db: TestDatabase;
  let store: Store;
  let admin: pg.Client;

  beforeAll(async () => {
    db = await createTestDatabase("authz_feed");
    store = await openStore({ kind: "postgres", url: db.url }, { migrate: true });
    admin = new pg.Client({ connectionString: ADMIN_URL });
    admin.on("error", () => {});
    await admin.connect();
  });
  afterAll(async () => {
    await admin?.query(`ALTER DATABASE "${db.name}" WITH ALLOW_CONNECTIONS true`).catch(() => {});
    await admin?.end();
    await store?.close();
    await db?.drop();
  });

  const killListen = async () => {
    const { rows } = await admin.query(
      "SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity WHERE datname = $1 AND query ILIKE 'LISTEN%'",
      [db.name],
    );
    return rows.length;
  };

  it("a resume overtaken by a new interruption does not mark the caches live while the feed is down", async () => {
    // The reader's store holds back the answer of a catalog load while `hold` is set.
    let hold = false;
    let held = 0;
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => (release = resolve));
    const gated: Store = new Proxy(store, {
      get(target, key, receiver) {
        if (key !== "loadCatalog") return Reflect.get(target, key, receiver);
        return async () => {
          const result = await target.loadCatalog();
          if (hold) {
            held++;
            await gate;
          }
          return result;
        };
      },
    });
    const hub = new ChangeHub(store);
    await hub.start();
    const reader = new CachedReader(gated, createDirectReader(gated), { userCacheSize: 10 });
    await reader.start(hub);
    const history: boolean[] = [];
    reader.onLiveChange((live) => history.push(live));
    try {
      expect(reader.live).toBe(true);
      hold = true;
      expect(await killListen()).toBe(1);
      await until(() => !reader.live, "the reader stops trusting its caches");
      // The feed reconnects and resumes; the reader's reload after the resume is held.
      await until(() => held === 1 && hub.connected, "the feed resumes and the reader reloads");
      expect(reader.live).toBe(false);

      // The feed drops again, for good this time, before that reload finishes.
      await admin.query(`ALTER DATABASE "${db.name}" WITH ALLOW_CONNECTIONS false`);
      expect(await killListen()).toBe(1);
      await until(() => !hub.connected, "the feed notices the second drop");
      release();
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(reader.live).toBe(false);
      expect(history).toEqual([false]);

      hold = false;
      await admin.query(`ALTER DATABASE "${db.name}" WITH ALLOW_CONNECTIONS true`);
      await until(() => reader.live, "the reader is live again once the feed is back", 20_000);
      expect(history).toEqual([false, true]);
      // And then follows changes again.
      const user = randomUUID();
      expect((await reader.user(user, CACHED)).roles).toEqual([]);
      const written = await store.assignRole(user, RESEARCHER_ID, "00000000-0000-0000-0000-000000000000");
      expect(await reader.waitFor(written.revision, 5000)).toBe(true);
      expect((await reader.user(user, CACHED)).roles.map((role) => role.name)).toEqual(["Researcher"]);
    } finally {
      release();
      await reader.close();
      await hub.close();
    }
  });
});
