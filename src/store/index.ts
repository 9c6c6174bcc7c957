// The store's public face: open a Store over PostgreSQL or SQLite, or only migrate and seed a database.

import type { DatabaseConfig } from "../config.ts";
import { type Logger, silentLogger } from "./logger.ts";
import { openStore } from "./sql-store.ts";

export type { Logger } from "./logger.ts";
export { silentLogger } from "./logger.ts";
export {
  type ImportBatchResult,
  importUsers,
  type OpenStoreOptions,
  openStore,
  storeSql,
} from "./sql-store.ts";

/** Applies migrations and the seed, then closes its connections (`flip-authz migrate`). */
export async function migrate(database: DatabaseConfig, logger: Logger = silentLogger): Promise<void> {
  const store = await openStore(database, { migrate: true, logger });
  await store.close();
}
