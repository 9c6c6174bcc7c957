// The store's public face: open a Store over PostgreSQL or SQLite, or only migrate and seed a database.

import type { DatabaseConfig } from "../config.ts";
import { toDomainError } from "./errors.ts";
import { type Logger, silentLogger } from "./logger.ts";
import { runMigrations } from "./migrate.ts";
import { createOrm } from "./orm.ts";

export type { Logger } from "./logger.ts";
export { silentLogger } from "./logger.ts";
export { type OpenStoreOptions, openStore, storeSql } from "./sql-store.ts";

/** Applies migrations and the seed, then closes its connections (`flip-authz migrate`). */
export async function migrate(database: DatabaseConfig, logger: Logger = silentLogger): Promise<void> {
  let orm: Awaited<ReturnType<typeof createOrm>>;
  try {
    orm = await createOrm(database, logger);
  } catch (error) {
    throw toDomainError(error, logger, "migrate");
  }
  try {
    await runMigrations(orm, logger);
  } catch (error) {
    throw toDomainError(error, logger, "migrate");
  } finally {
    await orm.orm.close(true).catch(() => {});
  }
}
