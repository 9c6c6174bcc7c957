// SQLite with another process holding the write lock: reads go on (WAL), writes wait, retry, and end as
// AbortedError with nothing written; once the lock is released the same write succeeds.

import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { AbortedError } from "../../src/authz/errors.ts";
import type { Store } from "../../src/authz/store.ts";
import { openStore, storeSql } from "../../src/store/index.ts";

const VIEWER_ID = "cdee79c9-a5e1-4b9e-a315-1ec2f3d29efe";
/**
 * Another process holding SQLite's write lock for `ms` (a second SQLite library in this process would not
 * do: POSIX file locks do not conflict within one process). Resolves once the lock is held.
 */
async function lockFromAnotherProcess(
  path: string,
  ms: number,
): Promise<{ child: ChildProcess; exited: Promise<unknown> }> {
  const script = `
    const { DatabaseSync } = require("node:sqlite");
    const db = new DatabaseSync(process.argv[1]);
    db.exec("BEGIN IMMEDIATE");
    process.stdout.write("locked\\n");
    setTimeout(() => { db.exec("ROLLBACK"); db.close(); }, Number(process.argv[2]));`;
  const child = spawn(process.execPath, ["-e", script, path, String(ms)], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const exited = once(child, "exit");
  await once(child.stdout as NodeJS.ReadableStream, "data");
  return { child, exited };
}

let dir: string;
let path: string;
let store: Store;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "authz-busy-"));
  path = join(dir, "authz.db");
  // 50 ms × 5 attempts outlasts the 150 ms lock below whatever the retry jitter, and gives up well within
  // the 3 s one.
  store = await openStore({ kind: "sqlite", path }, { migrate: true, sqliteBusyTimeoutMs: 50 });
});
afterAll(async () => {
  await store?.close();
  rmSync(dir, { recursive: true, force: true });
});

it("a write blocked by another process's lock is retried, then AbortedError; reads continue", async () => {
  const user = randomUUID();
  const other = await lockFromAnotherProcess(path, 3000);
  try {
    const error = await store.assignRole(user, VIEWER_ID, user).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AbortedError);
    expect((error as Error).message).not.toMatch(/SQLITE|UPDATE|authz_revision/);
    expect(await store.userRoles(user)).toMatchObject({ roleIds: [] });
  } finally {
    other.child.kill();
    await other.exited;
  }
  expect(await store.assignRole(user, VIEWER_ID, user)).toMatchObject({ changed: true });
  expect(await storeSql(store, "SELECT action FROM users_audit WHERE user_id = ?", [user])).toEqual([
    { action: "Assigned role Viewer" },
  ]);
});

it("a write waits out a short lock held by another process and succeeds", async () => {
  const user = randomUUID();
  const other = await lockFromAnotherProcess(path, 150);
  const started = Date.now();
  expect(await store.assignRole(user, VIEWER_ID, user)).toMatchObject({ changed: true });
  // It really waited for the other process (busy_timeout, then retries with backoff).
  expect(Date.now() - started).toBeGreaterThanOrEqual(50);
  await other.exited;
});
