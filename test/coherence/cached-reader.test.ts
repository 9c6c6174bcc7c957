// The cached reader against a real SQLite file store: what it asks the store for (every call counted on
// the way through), what a change invalidates, and that an unmet at_least_as_fresh never gets a stale
// answer, also when the change feed is behind or a read was overtaken by a change.

import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { CachedReader } from "../../src/authz/cached-reader.ts";
import { ChangeHub } from "../../src/authz/change-hub.ts";
import { CACHED, createDirectReader, type UserView } from "../../src/authz/reader.ts";
import type { Store } from "../../src/authz/store.ts";
import { openStore, storeSql } from "../../src/store/index.ts";
import { CAN_APPROVE_PROJECTS_ID, RESEARCHER_ID, VIEWER_ID } from "./replicas.ts";
import { writeFromAnotherProcess } from "./sqlite-writer.ts";

const NIL = "00000000-0000-0000-0000-000000000000";

/** The real store, with every call the reader makes counted by method name. */
function counted(store: Store): { store: Store; calls: Map<string, number>; total(): number } {
  const calls = new Map<string, number>();
  const proxy = new Proxy(store, {
    get(target, key, receiver) {
      const value = Reflect.get(target, key, receiver);
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => {
        calls.set(String(key), (calls.get(String(key)) ?? 0) + 1);
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { store: proxy, calls, total: () => [...calls.values()].reduce((a, b) => a + b, 0) };
}

const roleNames = (view: UserView) => view.roles.map((role) => role.name);
const granted = (view: UserView, permission: string) => {
  const found = view.index.resolvePermission(permission);
  return found === undefined ? [] : view.index.grantedBy(view.roles, found.id);
};

describe("CachedReader on a real SQLite store", () => {
  let dir: string;
  let path: string;
  let store: Store;
  const opened: { close(): Promise<void> }[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "authz-reader-"));
    path = join(dir, "authz.db");
    store = await openStore({ kind: "sqlite", path }, { migrate: true, pollIntervalMs: 50 });
  });
  afterEach(async () => {
    for (const item of opened.splice(0).reverse()) await item.close();
  });
  afterAll(async () => {
    await store?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A started hub and reader over `base` (the store itself by default); the reader sees a counting store. */
  async function reader(base: Store = store) {
    const count = counted(base);
    const hub = new ChangeHub(base);
    await hub.start();
    const cached = new CachedReader(count.store, createDirectReader(count.store), { userCacheSize: 100 });
    opened.push(hub, cached);
    await cached.start(hub);
    expect(cached.live).toBe(true);
    return { cached, count };
  }

  it("steady state: repeated checks of cached users cause zero store reads", async () => {
    const { cached, count } = await reader();
    const researcher = randomUUID();
    const nobody = randomUUID();
    await store.assignRole(researcher, RESEARCHER_ID, NIL);
    expect(await cached.waitFor(await store.currentRevision(), 2000)).toBe(true);
    // Warm up: one read each.
    await cached.user(researcher, CACHED);
    await cached.user(nobody, CACHED);
    const before = count.total();
    const stats = { ...cached.stats };
    for (let i = 0; i < 200; i++) {
      expect(roleNames(await cached.user(researcher, CACHED))).toEqual(["Researcher"]);
      expect(roleNames(await cached.user(nobody, CACHED))).toEqual([]);
      await cached.catalog(CACHED);
    }
    expect(count.total() - before).toBe(0);
    expect(cached.stats).toEqual({ ...stats, hits: stats.hits + 400 });
  });

  it("a user_roles change invalidates only that user; a role_permissions change reloads the catalog only", async () => {
    const { cached, count } = await reader();
    const changed = randomUUID();
    const untouched = randomUUID();
    await store.assignRole(untouched, VIEWER_ID, NIL);
    expect(await cached.waitFor(await store.currentRevision(), 2000)).toBe(true);
    await cached.user(changed, CACHED);
    await cached.user(untouched, CACHED);

    // Written by another process: only the feed can tell this reader.
    await writeFromAnotherProcess(path, [
      ["INSERT INTO user_role (user_id, role_id) VALUES (?, ?)", [changed, RESEARCHER_ID]],
    ]);
    expect(await cached.waitFor(await store.currentRevision(), 2000)).toBe(true);
    count.calls.clear();
    let stats = { ...cached.stats };
    expect(roleNames(await cached.user(untouched, CACHED))).toEqual(["Viewer"]);
    expect(count.total()).toBe(0);
    expect(roleNames(await cached.user(changed, CACHED))).toEqual(["Researcher"]);
    expect(Object.fromEntries(count.calls)).toEqual({ userRoles: 1 });
    expect(cached.stats).toEqual({ ...stats, hits: stats.hits + 1, misses: stats.misses + 1 });

    // Viewer gains a permission: the map is reloaded once, every cached user stays cached.
    count.calls.clear();
    stats = { ...cached.stats };
    await writeFromAnotherProcess(path, [
      [
        "INSERT INTO role_permission (id, role_id, permission_id) VALUES (?, ?, ?)",
        [randomUUID(), VIEWER_ID, CAN_APPROVE_PROJECTS_ID],
      ],
    ]);
    expect(await cached.waitFor(await store.currentRevision(), 2000)).toBe(true);
    expect(granted(await cached.user(untouched, CACHED), "CAN_APPROVE_PROJECTS")).toEqual(["Viewer"]);
    expect(roleNames(await cached.user(changed, CACHED))).toEqual(["Researcher"]);
    expect(Object.fromEntries(count.calls)).toEqual({ loadCatalog: 1 });
    expect(cached.stats).toEqual({
      ...stats,
      hits: stats.hits + 2,
      catalogReloads: stats.catalogReloads + 1,
    });
    await storeSql(store, "DELETE FROM role_permission WHERE role_id = ?", [VIEWER_ID]);
  });

  it("an unmet at_least_as_fresh reads the database when the feed is behind, and the cache stays out of it", async () => {
    // A second store on the same file whose feed practically never polls: it is behind every other writer.
    const lagging = await openStore({ kind: "sqlite", path }, { migrate: false, pollIntervalMs: 3_600_000 });
    opened.push(lagging);
    const { cached, count } = await reader(lagging);
    const user = randomUUID();
    expect(roleNames(await cached.user(user, CACHED))).toEqual([]); // cached: no roles
    const written = await store.assignRole(user, RESEARCHER_ID, NIL);
    expect(cached.appliedRevision).toBeLessThan(written.revision);

    count.calls.clear();
    const t0 = performance.now();
    const view = await cached.user(user, { kind: "fresh", atLeast: written.revision });
    expect(performance.now() - t0).toBeGreaterThanOrEqual(90); // waited for the feed first (100 ms)
    expect(roleNames(view)).toEqual(["Researcher"]);
    expect(view.revision).toBeGreaterThanOrEqual(written.revision);
    expect(count.calls.get("userRoles")).toBe(1);
    expect(cached.stats.databaseReads).toBe(1);
    // Full consistency reads the database too; the stale cache entry was neither used nor replaced.
    expect(roleNames(await cached.user(user, { kind: "full" }))).toEqual(["Researcher"]);
    expect(cached.stats.databaseReads).toBe(2);
  });

  it("a read overtaken by a change is not shared with a later at_least_as_fresh caller", async () => {
    const count = counted(store);
    // The first userRoles read runs at once but its answer is held back until released.
    let release: () => void = () => {};
    const held = new Promise<void>((resolve) => (release = resolve));
    let first = true;
    const slow: Store = new Proxy(count.store, {
      get(target, key, receiver) {
        if (key !== "userRoles") return Reflect.get(target, key, receiver);
        return async (userId: string) => {
          const result = await target.userRoles(userId);
          if (first) {
            first = false;
            await held;
          }
          return result;
        };
      },
    });
    const hub = new ChangeHub(store);
    await hub.start();
    const cached = new CachedReader(slow, createDirectReader(slow), { userCacheSize: 100 });
    opened.push(hub, cached);
    await cached.start(hub);

    const user = randomUUID();
    const early = cached.user(user, CACHED); // reads "no roles", answer held
    await new Promise((resolve) => setTimeout(resolve, 20));
    const written = await store.assignRole(user, RESEARCHER_ID, NIL);
    expect(await cached.waitFor(written.revision, 2000)).toBe(true);
    const fresh = cached.user(user, { kind: "fresh", atLeast: written.revision });
    const freshView = await Promise.race([
      fresh,
      new Promise<"blocked">((resolve) => setTimeout(() => resolve("blocked"), 500)),
    ]);
    release();
    expect(freshView === "blocked" ? "joined the held, older read" : roleNames(freshView)).toEqual([
      "Researcher",
    ]);
    expect(roleNames(await early)).toEqual([]);
    // The overtaken answer was not cached either.
    expect(roleNames(await cached.user(user, CACHED))).toEqual(["Researcher"]);
  });

  it("a map loaded at start that finishes after a newer reload does not replace it", async () => {
    const count = counted(store);
    // The start's loadCatalog reads at once, but its answer is held back until released.
    let release: () => void = () => {};
    const held = new Promise<void>((resolve) => (release = resolve));
    let first = true;
    const slow: Store = new Proxy(count.store, {
      get(target, key, receiver) {
        if (key !== "loadCatalog") return Reflect.get(target, key, receiver);
        return async () => {
          const result = await target.loadCatalog();
          if (first) {
            first = false;
            await held;
          }
          return result;
        };
      },
    });
    const hub = new ChangeHub(store);
    await hub.start();
    const cached = new CachedReader(slow, createDirectReader(slow), { userCacheSize: 100 });
    opened.push(hub, cached);
    const started = cached.start(hub);
    await new Promise((resolve) => setTimeout(resolve, 20));
    // Viewer gains a permission while the start's map is on its way: the feed makes the reader reload.
    await storeSql(store, "INSERT INTO role_permission (id, role_id, permission_id) VALUES (?, ?, ?)", [
      randomUUID(),
      VIEWER_ID,
      CAN_APPROVE_PROJECTS_ID,
    ]);
    const revision = await store.currentRevision();
    for (let i = 0; cached.appliedRevision < revision; i++) {
      if (i > 200) throw new Error("the change never reached the reader");
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    release();
    await started;
    const viewer = randomUUID();
    await store.assignRole(viewer, VIEWER_ID, NIL);
    expect(granted(await cached.user(viewer, { kind: "full" }), "CAN_APPROVE_PROJECTS")).toEqual(["Viewer"]);
    expect(granted(await cached.user(viewer, CACHED), "CAN_APPROVE_PROJECTS")).toEqual(["Viewer"]);
    await storeSql(store, "DELETE FROM role_permission WHERE role_id = ?", [VIEWER_ID]);
  });
});
