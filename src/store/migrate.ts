// Applies the committed migrations and the seed. On PostgreSQL a session advisory lock, held on a connection
// of its own, makes processes that start together on one database take turns.

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
    await lock.query("SELECT pg_advisory_lock($1)", [MIGRATION_LOCK_KEY]);
    await applyAndSeed(orm, logger);
  } finally {
    // Ending the session releases the lock even if the unlock fails.
    await lock.query("SELECT pg_advisory_unlock($1)", [MIGRATION_LOCK_KEY]).catch(() => {});
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
