// Applies the committed migrations and the seed. On PostgreSQL an advisory lock, held by an open transaction
// on a connection of its own, makes processes that start together on one database take turns. A
// transaction-scoped lock, so that a transaction pooler (PgBouncer pool_mode=transaction) keeps the lock's
// server connection for the whole transaction and releases the lock with it; a session lock would stay
// behind on a pooled server connection.

import pg from "pg";
import { redactDatabase } from "../config.ts";
import type { Logger } from "./logger.ts";
import type { Orm } from "./orm.ts";
import { seed } from "./seed.ts";

/** Arbitrary, fixed: the advisory lock key every flip-authz process migrates under. */
const MIGRATION_LOCK_KEY = 7_221_190_410;

export async function runMigrations(orm: Orm, logger: Logger): Promise<void> {
  const config = orm.orm.config;
  if (orm.dialect.kind !== "postgres") {
    await applyAndSeed(orm, logger);
    return;
  }
  const lock = new pg.Client({ connectionString: config.get("clientUrl"), connectionTimeoutMillis: 5_000 });
  lock.on("error", (error) => logger.warn({ err: error.message }, "migration lock connection lost"));
  await lock.connect();
  try {
    await lock.query("BEGIN");
    await lock.query("SELECT pg_advisory_xact_lock($1)", [MIGRATION_LOCK_KEY]);
    await applyAndSeed(orm, logger);
  } finally {
    // Ending the transaction (or the session) releases the lock.
    await lock.query("ROLLBACK").catch(() => {});
    await lock.end().catch(() => {});
  }
}

async function applyAndSeed(orm: Orm, logger: Logger): Promise<void> {
  const applied = await orm.orm.migrator.up();
  const { written } = await seed(orm.em());
  logger.info(
    {
      database: redactDatabase(
        orm.dialect.kind === "postgres"
          ? { kind: "postgres", url: String(orm.orm.config.get("clientUrl")) }
          : { kind: "sqlite", path: String(orm.orm.config.get("dbName")) },
      ),
      migrations: applied.map((migration) => migration.name),
      seeded: written,
    },
    "database migrated",
  );
}
