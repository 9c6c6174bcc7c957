// Commands that work on DATABASE_URL directly, without a running server.

import { Authz } from "../authz/authz.ts";
import { ChangeHub } from "../authz/change-hub.ts";
import { createDatabaseReader } from "../authz/reader.ts";
import type { Store } from "../authz/store.ts";
import { type Config, redactDatabase } from "../config.ts";
import { migrate, openStore } from "../store/index.ts";

async function withStore<T>(config: Config, fn: (authz: Authz, store: Store) => Promise<T>): Promise<T> {
  // Like the server, bring the schema up to date first (unless told not to), so bootstrap works on a new database.
  const store = await openStore(config.database, { migrate: config.migrateOnStart });
  try {
    const authz = new Authz({
      store,
      reader: createDatabaseReader(store),
      hub: new ChangeHub(store),
      maxBatch: config.maxBatch,
    });
    return await fn(authz, store);
  } finally {
    await store.close();
  }
}

export async function migrateCommand(config: Config): Promise<number> {
  await migrate(config.database);
  process.stdout.write(`migrated ${redactDatabase(config.database)}\n`);
  return 0;
}

export async function assignRoleCommand(
  config: Config,
  user: string,
  role: string,
  actorId: string,
): Promise<number> {
  return withStore(config, async (authz) => {
    const result = await authz.assignRole(user, role, actorId);
    const roles = result.roles.length > 0 ? result.roles.join(", ") : "none";
    process.stdout.write(
      `${result.changed ? "assigned" : "unchanged (already held)"}: ${user.toLowerCase()} now holds ${roles}\n`,
    );
    return 0;
  });
}

export async function checkCommand(config: Config, user: string, permission: string): Promise<number> {
  return withStore(config, async (authz) => {
    const result = await authz.checkPermission({
      userId: user,
      permission,
      fullyConsistent: true,
      atLeastAsFresh: "",
    });
    process.stdout.write(
      result.allowed ? `allowed (granted by ${result.grantedBy.join(", ")})\n` : "denied\n",
    );
    return 0;
  });
}
