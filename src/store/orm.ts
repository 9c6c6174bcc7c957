// Builds the MikroORM instance for a DatabaseConfig (PostgreSQL or SQLite) with the committed migrations,
// and which platform it is.

import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { MikroORM, type Options } from "@mikro-orm/core";
import { Migrator } from "@mikro-orm/migrations";
import { PostgreSqlDriver } from "@mikro-orm/postgresql";
import type { SqlEntityManager } from "@mikro-orm/sql";
import { SqliteDriver } from "@mikro-orm/sqlite";
import type pg from "pg";
import type { DatabaseConfig } from "../config.ts";
import { ENTITIES } from "./entities.ts";
import type { Logger } from "./logger.ts";
import { reclaimLostClients } from "./lost-clients.ts";
import { Migration20261130FlipSchema } from "./migrations/20261130-flip-schema.ts";
import { Migration20261201RevisionsAtCommit } from "./migrations/20261201-revisions-at-commit.ts";
import { Migration20261202RevisionsInCommit } from "./migrations/20261202-revisions-in-commit.ts";

/** In the order they apply. */
export const MIGRATIONS = [
  Migration20261130FlipSchema,
  Migration20261201RevisionsAtCommit,
  Migration20261202RevisionsInCommit,
];

/** Which database the ORM talks to: the store's few per-platform choices (locks, snapshot isolation). */
export interface Dialect {
  kind: "postgres" | "sqlite";
}

const postgresDialect: Dialect = { kind: "postgres" };

const sqliteDialect: Dialect = { kind: "sqlite" };

/** Epoch milliseconds (as a number, numeric string or ISO string) as a Date. */
export function toDate(value: unknown): Date {
  if (value instanceof Date) return value;
  if (typeof value === "number") return new Date(value);
  if (typeof value === "bigint") return new Date(Number(value));
  if (typeof value === "string")
    return /^-?\d+(\.\d+)?$/.test(value) ? new Date(Number(value)) : new Date(value);
  return new Date(Number.NaN);
}

/** What PostgreSQL's NOTICE at COMMIT carries (see the 20261202 migration). */
const COMMIT_NOTICE = "authz_commit_revision";
/** Revisions kept for transactions whose writer has not taken them yet (one whose COMMIT failed after). */
const COMMIT_REVISIONS_KEPT = 1024;

/**
 * The revisions PostgreSQL announced at COMMIT, by transaction id, from every pooled connection: each
 * arrives before its COMMIT's answer, so the writer takes its own right after COMMIT resolves.
 */
export class CommitRevisions {
  readonly #byTxid = new Map<string, number>();

  /** A connection's NOTICE; any other than the commit's is ignored. */
  record(notice: { message?: string | undefined; detail?: string | undefined }): void {
    if (notice.message !== COMMIT_NOTICE || notice.detail === undefined) return;
    const colon = notice.detail.indexOf(":");
    const revision = Number(notice.detail.slice(colon + 1));
    if (colon <= 0 || !Number.isSafeInteger(revision)) return;
    this.#byTxid.set(notice.detail.slice(0, colon), revision);
    if (this.#byTxid.size > COMMIT_REVISIONS_KEPT) {
      // The oldest goes first (a Map keeps insertion order).
      const oldest = this.#byTxid.keys().next().value;
      if (oldest !== undefined) this.#byTxid.delete(oldest);
    }
  }

  /** The revision transaction `txid` committed at, once; undefined when no NOTICE came. */
  take(txid: string): number | undefined {
    const revision = this.#byTxid.get(txid);
    this.#byTxid.delete(txid);
    return revision;
  }
}

export interface Orm {
  orm: MikroORM;
  dialect: Dialect;
  /** PostgreSQL: the revisions its COMMITs announce. */
  commits?: CommitRevisions;
  /** A fresh EntityManager fork: one per operation. */
  em(): SqlEntityManager;
}

export interface OrmOptions {
  /** SQLite: how long a statement waits for another connection's write lock before SQLITE_BUSY. */
  sqliteBusyTimeoutMs?: number;
}

export async function createOrm(
  database: DatabaseConfig,
  logger: Logger,
  options: OrmOptions = {},
): Promise<Orm> {
  const common = {
    entities: [...ENTITIES],
    extensions: [Migrator],
    ensureDatabase: false,
    debug: false,
    migrations: {
      migrationsList: MIGRATIONS,
      tableName: "authz_migrations",
      transactional: true,
      allOrNothing: true,
      snapshot: false,
      snapshotOnMigrate: false,
      silent: true,
    },
    // The ORM's own messages go to our logger, never to stdout.
    loggerFactory: () => ({
      log: () => {},
      error: (_namespace: string, message: string) => logger.error({ source: "mikro-orm" }, message),
      warn: (_namespace: string, message: string) => logger.warn({ source: "mikro-orm" }, message),
      logQuery: () => {},
      setDebugMode: () => {},
      isEnabled: () => false,
    }),
  } satisfies Partial<Options>;

  if (database.kind === "postgres") {
    const commits = new CommitRevisions();
    const orm = await MikroORM.init({
      ...common,
      driver: PostgreSqlDriver,
      clientUrl: database.url,
      pool: { min: 0, max: 10, idleTimeoutMillis: 30_000 },
      driverOptions: {
        connectionTimeoutMillis: 5_000,
        // MikroORM already listens on the pool and on checked-out clients; this keeps a log line of ours.
        onPoolCreated: (pool: pg.Pool) => {
          pool.on("error", (error) => logger.warn({ err: error.message }, "PostgreSQL idle connection lost"));
          pool.on("connect", (client) => client.on("notice", (notice) => commits.record(notice)));
          reclaimLostClients(pool);
        },
      },
    });
    return { orm, dialect: postgresDialect, commits, em: () => orm.em.fork() as SqlEntityManager };
  }

  const memory = database.path === ":memory:";
  if (!memory) mkdirSync(dirname(database.path), { recursive: true });
  const orm = await MikroORM.init({ ...common, driver: SqliteDriver, dbName: database.path });
  const em = orm.em.fork() as SqlEntityManager;
  if (!memory) {
    // WAL lets readers (other processes, the CLI) run beside the writer; busy_timeout waits for the lock
    // instead of failing at once. Raw: MikroORM has no API for SQLite pragmas.
    await em.execute("pragma journal_mode = wal");
    await em.execute(`pragma busy_timeout = ${Math.max(0, Math.trunc(options.sqliteBusyTimeoutMs ?? 5000))}`);
  }
  await em.execute("pragma foreign_keys = on"); // Raw: a pragma, as above.
  return { orm, dialect: sqliteDialect, em: () => orm.em.fork() as SqlEntityManager };
}
