// The PostgreSQL change feed and connection loss: LISTEN sees plain-SQL writes, survives its backend being
// terminated (interrupted → resumed, nothing missed), and dropped pool connections never crash the process.

import { randomUUID } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UnavailableError } from "../../src/authz/errors.ts";
import type { Store } from "../../src/authz/store.ts";
import { HEARTBEAT_MS } from "../../src/store/change-feed.ts";
import { openStore, storeSql } from "../../src/store/index.ts";
import { ADMIN_URL, createTestDatabase, postgresAvailable, type TestDatabase } from "../helpers/postgres.ts";
import { recorder } from "./conformance.ts";

const signalsLocalPostgres =
  ["127.0.0.1", "localhost", "[::1]"].includes(new URL(ADMIN_URL).hostname) &&
  process.getuid?.() === 0 &&
  existsSync("/proc/self/comm");

const VIEWER_ID = "cdee79c9-a5e1-4b9e-a315-1ec2f3d29efe";

describe.skipIf(!postgresAvailable)("PostgreSQL: change feed and lost connections", () => {
  let db: TestDatabase;
  let store: Store;
  let flip: pg.Client; // FLIP's API, writing plain SQL on its own connection

  beforeAll(async () => {
    db = await createTestDatabase();
    store = await openStore({ kind: "postgres", url: db.url }, { migrate: true });
    flip = new pg.Client({ connectionString: db.url });
    flip.on("error", () => {});
    await flip.connect();
  });
  afterAll(async () => {
    await flip?.end();
    await store?.close();
    await db?.drop();
  });

  it("delivers plain-SQL writes from another connection, with kind and user", async () => {
    const user = randomUUID();
    const rec = recorder();
    const subscription = await store.subscribe(await store.currentRevision(), rec.listener);
    try {
      await flip.query("INSERT INTO user_role (user_id, role_id) VALUES ($1, $2)", [user, VIEWER_ID]);
      await flip.query("UPDATE roles SET description = 'changed by FLIP' WHERE id = $1", [VIEWER_ID]);
      await rec.until(() => rec.changes.length >= 2);
      expect(rec.changes.map((c) => [c.kind, c.userId])).toEqual([
        ["user_roles", user],
        ["role_permissions", null],
      ]);
      expect(rec.changes[1]?.revision).toBe((rec.changes[0]?.revision ?? 0) + 1);
    } finally {
      await subscription.close();
    }
  });

  it("a rolled-back write is never delivered", async () => {
    const rec = recorder();
    const start = await store.currentRevision();
    const subscription = await store.subscribe(start, rec.listener);
    try {
      await flip.query("BEGIN");
      await flip.query("INSERT INTO user_role (user_id, role_id) VALUES ($1, $2)", [randomUUID(), VIEWER_ID]);
      await flip.query("ROLLBACK");
      const user = randomUUID();
      await flip.query("INSERT INTO user_role (user_id, role_id) VALUES ($1, $2)", [user, VIEWER_ID]);
      await rec.until(() => rec.changes.length >= 1);
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(rec.changes).toEqual([{ revision: start + 1, kind: "user_roles", userId: user }]);
    } finally {
      await subscription.close();
    }
  });

  it("reconnects after its LISTEN backend is terminated and replays the change made while down", async () => {
    const rec = recorder();
    const downUser = randomUUID();
    let downWrite: Promise<unknown> | undefined;
    const subscription = await store.subscribe(await store.currentRevision(), {
      ...rec.listener,
      onInterrupted: (error) => {
        rec.listener.onInterrupted(error);
        // Written at once, before the reconnect (which waits at least 50 ms): missed by LISTEN.
        downWrite = flip.query("INSERT INTO user_role (user_id, role_id) VALUES ($1, $2)", [
          downUser,
          VIEWER_ID,
        ]);
      },
    });
    try {
      const killed = await flip.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE query ILIKE 'LISTEN%' AND datname = current_database() AND pid <> pg_backend_pid()`,
      );
      expect(killed.rowCount).toBe(1);
      await rec.until(() => rec.events.includes("resumed"));
      await downWrite;
      await rec.until(() => rec.changes.some((c) => c.userId === downUser));
      const interrupted = rec.events.indexOf("interrupted");
      expect(interrupted).toBeGreaterThanOrEqual(0);
      expect(rec.events.indexOf("resumed")).toBeGreaterThan(interrupted);
      expect(rec.changes.filter((c) => c.userId === downUser)).toHaveLength(1);

      // Live again: a new write arrives through LISTEN.
      const after = randomUUID();
      await flip.query("INSERT INTO user_role (user_id, role_id) VALUES ($1, $2)", [after, VIEWER_ID]);
      await rec.until(() => rec.changes.some((c) => c.userId === after));
      const revisions = rec.changes.map((c) => c.revision);
      expect(revisions).toEqual([...new Set(revisions)].sort((x, y) => x - y));
    } finally {
      await subscription.close();
    }
  });

  // Freezes the backend with SIGSTOP: only for a PostgreSQL on this machine whose processes we may signal.
  it.skipIf(!signalsLocalPostgres)(
    "notices a LISTEN connection that went silent without closing, and replays what it missed",
    async () => {
      const rec = recorder();
      const subscription = await store.subscribe(await store.currentRevision(), rec.listener);
      let frozen: number | undefined;
      try {
        const { rows } = await flip.query<{ pid: number }>(
          `SELECT pid FROM pg_stat_activity
           WHERE query ILIKE 'LISTEN%' AND datname = current_database() AND pid <> pg_backend_pid()`,
        );
        expect(rows).toHaveLength(1);
        const pid = rows[0]?.pid ?? 0;
        expect(readFileSync(`/proc/${pid}/comm`, "utf8").trim()).toBe("postgres");
        // A frozen backend keeps its socket open and answers nothing: what a partition looks like, no RST.
        process.kill(pid, "SIGSTOP");
        frozen = pid;
        const user = randomUUID();
        await flip.query("INSERT INTO user_role (user_id, role_id) VALUES ($1, $2)", [user, VIEWER_ID]);
        await rec.until(() => rec.changes.some((c) => c.userId === user), HEARTBEAT_MS * 3);
        expect(rec.events.indexOf("interrupted")).toBeGreaterThanOrEqual(0);
        expect(rec.events.indexOf("resumed")).toBeGreaterThan(rec.events.indexOf("interrupted"));
        expect(rec.changes.filter((c) => c.userId === user)).toHaveLength(1);
      } finally {
        if (frozen !== undefined) {
          process.kill(frozen, "SIGCONT");
          await flip.query("SELECT pg_terminate_backend($1)", [frozen]);
        }
        await subscription.close();
      }
    },
    30_000,
  );

  it("a pooled connection terminated mid-query fails that call only; the process and the store live on", async () => {
    const sleeping = storeSql(store, "SELECT pg_sleep(10)").then(
      () => null,
      (error: unknown) => error,
    );
    await new Promise((resolve) => setTimeout(resolve, 200));
    const killed = await flip.query(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
       WHERE query ILIKE 'SELECT pg_sleep%' AND datname = current_database() AND pid <> pg_backend_pid()`,
    );
    expect(killed.rowCount).toBe(1);
    expect(await sleeping).toBeInstanceOf(Error);
    // Terminate every other connection of the store too, idle ones included.
    await flip.query(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    );
    await new Promise((resolve) => setTimeout(resolve, 100));
    for (let i = 0; i < 3; i++) {
      const outcome = await store.userRoles(randomUUID()).catch((error: unknown) => error);
      if (outcome instanceof Error) {
        expect(outcome).toBeInstanceOf(UnavailableError);
      }
    }
    await expect(store.ping()).resolves.toBeUndefined();
    await expect(store.assignRole(randomUUID(), VIEWER_ID, randomUUID())).resolves.toMatchObject({
      changed: true,
    });
  });
});

describe("PostgreSQL unreachable", () => {
  it.skipIf(!postgresAvailable)(
    "a database refusing connections (SQLSTATE 55000) answers UnavailableError, then recovers",
    async () => {
      const db = await createTestDatabase();
      const store = await openStore({ kind: "postgres", url: db.url }, { migrate: true });
      const admin = new pg.Client({ connectionString: ADMIN_URL });
      admin.on("error", () => {});
      await admin.connect();
      try {
        await admin.query(`ALTER DATABASE "${db.name}" ALLOW_CONNECTIONS false`);
        await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", [
          db.name,
        ]);
        // Several calls: the first may meet a pooled connection already cut, the rest must open new ones.
        await new Promise((resolve) => setTimeout(resolve, 100));
        for (let i = 0; i < 3; i++) {
          const error = await store.userRoles(randomUUID()).catch((e: unknown) => e);
          expect(error).toBeInstanceOf(UnavailableError);
          expect((error as Error).message).toBe("the database is unavailable");
        }
        await admin.query(`ALTER DATABASE "${db.name}" ALLOW_CONNECTIONS true`);
        await expect(store.userRoles(randomUUID())).resolves.toMatchObject({ roleIds: [] });
      } finally {
        await admin.query(`ALTER DATABASE "${db.name}" ALLOW_CONNECTIONS true`).catch(() => {});
        await admin.end();
        await store.close();
        await db.drop();
      }
    },
  );

  it("openStore fails with UnavailableError whose message holds no URL, password or SQL", async () => {
    const error = await openStore(
      { kind: "postgres", url: "postgres://postgres:s3cret@127.0.0.1:1/nowhere" },
      { migrate: true },
    ).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UnavailableError);
    expect((error as Error).message).toBe("the database is unavailable");
  });

  it.skipIf(!postgresAvailable)(
    "a store whose database goes away answers UnavailableError, not a crash",
    async () => {
      const db = await createTestDatabase();
      const store = await openStore({ kind: "postgres", url: db.url }, { migrate: true });
      try {
        await db.drop(); // WITH (FORCE): ends the store's connections, then the database is gone
        const error = await store.userRoles(randomUUID()).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(UnavailableError);
        expect((error as Error).message).toBe("the database is unavailable");
      } finally {
        await store.close();
      }
    },
  );
});
