// Commands that work on DATABASE_URL directly, without a running server.

import { Authz } from "../authz/authz.ts";
import { ChangeHub } from "../authz/change-hub.ts";
import { UnavailableError } from "../authz/errors.ts";
import { createDirectReader } from "../authz/reader.ts";
import type { Store } from "../authz/store.ts";
import { type Config, ConfigError, redactDatabase } from "../config.ts";
import { type Logger, migrate, openStore } from "../store/index.ts";

/**
 * The store logs a driver error's cause and throws a neutral domain error (what RPC clients see). An
 * operator at a terminal wants the cause: keep the last one logged, to tell with the failure.
 */
export function causeKeeper(): { logger: Logger; explain(error: unknown, database: string): Error } {
  let cause: unknown;
  const keep = (obj: object) => {
    if ("err" in obj) cause = obj.err;
  };
  return {
    logger: { info() {}, warn: keep, error: keep },
    explain(error, database) {
      if (!(error instanceof UnavailableError))
        return error instanceof Error ? error : new Error(String(error));
      const reason =
        cause instanceof Error && cause.message !== "" ? `: ${cause.message.split("\n")[0]}` : "";
      return new UnavailableError(`${error.message} (${database})${reason}`);
    },
  };
}

/** These commands read DATABASE_URL; a follower's configuration has none to offer. */
export function assertDatabase(config: Config): void {
  if (config.upstream) {
    throw new ConfigError(
      "AUTHZ_UPSTREAM",
      "is set: a follower keeps no database; run this command with the upstream's DATABASE_URL",
    );
  }
}

async function withStore<T>(config: Config, fn: (authz: Authz) => Promise<T>): Promise<T> {
  assertDatabase(config);
  const causes = causeKeeper();
  let store: Store;
  try {
    // Like the server, bring the schema up to date first (unless told not to), so bootstrap works on a new database.
    store = await openStore(config.database, { migrate: config.migrateOnStart, logger: causes.logger });
  } catch (error) {
    throw causes.explain(error, redactDatabase(config.database));
  }
  try {
    const authz = new Authz({
      store,
      reader: createDirectReader(store),
      hub: new ChangeHub(store),
      maxBatch: config.maxBatch,
    });
    return await fn(authz);
  } catch (error) {
    throw causes.explain(error, redactDatabase(config.database));
  } finally {
    await store.close();
  }
}

export async function migrateCommand(config: Config): Promise<number> {
  assertDatabase(config);
  const causes = causeKeeper();
  await migrate(config.database, causes.logger).catch((error: unknown) => {
    throw causes.explain(error, redactDatabase(config.database));
  });
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
