// The Store (src/authz/store.ts) over MikroORM on PostgreSQL or SQLite, through the entities of
// entities.ts: em.find/findOne, em.insert/nativeUpdate/nativeDelete and the QueryBuilder typed by the entity
// definitions (em.getKysely(), typed from the entities' tables, for the batched userRoles lookup of the cold
// path and, on PostgreSQL, the writes' one-round-trip statements of postgres-writes.ts), a fresh
// EntityManager fork per operation, every write in one em.transactional with its users_audit row, its
// revision assigned inside its COMMIT on PostgreSQL (the 20261202 migration), where writes that wait while
// others are written share one transaction (group-commit.ts, commitGroup). Raw SQL is left only where
// MikroORM has no API for the thing (advisory locks, the ping), each place saying so.

import { LockMode, raw, sql } from "@mikro-orm/core";
import type { InferKyselyDB, SqlEntityManager } from "@mikro-orm/sql";
import type { Kysely } from "kysely";
import { AuthzError, FailedPreconditionError, NotFoundError } from "../authz/errors.ts";
import { ADMIN_ROLE_ID } from "../authz/flip.ts";
import { isUuid } from "../authz/ids.ts";
import type {
  AuditCursor,
  AuditEvent,
  AuditPage,
  Catalog,
  Change,
  ChangeKind,
  ChangeListener,
  ChangeSubscription,
  PermissionRecord,
  ProfilePatch,
  ProfileRead,
  ProfileRecord,
  ProfileWriteResult,
  Revision,
  RoleName,
  RoleRecord,
  RoleWriteResult,
  Store,
  UserRoles,
} from "../authz/store.ts";
import type { ImportLine } from "../authz/user-import.ts";
import type { DatabaseConfig } from "../config.ts";
import { BatchedReads } from "./batched-reads.ts";
import { PollingFeed, PostgresFeed } from "./change-feed.ts";
import {
  ChangeLogEntry,
  Permission,
  RevisionCounter,
  Role,
  RolePermission,
  UserAudit,
  UserProfile,
  UserRole,
} from "./entities.ts";
import { isConnectionError, toDomainError, withRetries } from "./errors.ts";
import { GroupCommit, type QueuedWrite } from "./group-commit.ts";
import { type Logger, silentLogger } from "./logger.ts";
import { runMigrations } from "./migrate.ts";
import { AUDIT_TIME_POSTGRES } from "./migrations/20261130-flip-schema.ts";
import { createOrm, type Dialect, type Orm, toDate } from "./orm.ts";
import {
  type AuditValues,
  CHANGE_ROLES,
  LOCK_USER_AND_ROLE,
  ROLES_WANTED_AND_HELD,
  WRITE_PROFILE,
} from "./postgres-writes.ts";
import { ReusedStatement } from "./reused-statement.ts";
import { uuidv7 } from "./uuid7.ts";

export interface OpenStoreOptions {
  /** Apply migrations and the seed before returning. */
  migrate: boolean;
  logger?: Logger;
  /** SQLite only: how often subscriptions look for other processes' writes (default 200 ms). */
  pollIntervalMs?: number;
  /** SQLite only: how long to wait for another process's write lock before retrying (default 5000 ms). */
  sqliteBusyTimeoutMs?: number;
}

type Row = Record<string, unknown>;

const str = (value: unknown): string => String(value);
const num = (value: unknown): number => Number(value);
const byName = (a: RoleName, b: RoleName) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

/** Opens the store; with `migrate`, migrations and the seed run first (under a lock on PostgreSQL). */
export async function openStore(database: DatabaseConfig, options: OpenStoreOptions): Promise<Store> {
  const logger = options.logger ?? silentLogger;
  let orm: Orm;
  try {
    orm = await createOrm(
      database,
      logger,
      options.sqliteBusyTimeoutMs === undefined ? {} : { sqliteBusyTimeoutMs: options.sqliteBusyTimeoutMs },
    );
  } catch (error) {
    throw toDomainError(error, logger, "open");
  }
  let pending: number;
  try {
    if (options.migrate) await runMigrations(orm, logger);
    pending = options.migrate ? 0 : (await orm.orm.migrator.getPending()).length;
  } catch (error) {
    await orm.orm.close(true).catch(() => {});
    throw toDomainError(error, logger, "migrate");
  }
  if (pending > 0) {
    // Without this, the first query fails on a missing table and says only "internal database error".
    await orm.orm.close(true).catch(() => {});
    throw new Error(
      `the database schema is not up to date (${pending} migration${pending === 1 ? "" : "s"} pending): ` +
        "run flip-authz migrate, or set AUTHZ_MIGRATE_ON_START=true",
    );
  }
  return new SqlStore(orm, database, logger, options.pollIntervalMs ?? 200);
}

/** The counter's current value. */
async function readRevision(em: SqlEntityManager): Promise<Revision> {
  const rows = await em
    .createQueryBuilder(RevisionCounter, "c")
    .select("c.revision")
    .where({ id: 1 })
    .execute("all", true);
  return num(rows[0]?.revision ?? 0);
}

/** A user's roles (id and name), sorted by name: one statement, the user_role rows as a subquery. */
async function readUserRoles(em: SqlEntityManager, userId: string): Promise<RoleName[]> {
  const held = em.createQueryBuilder(UserRole, "ur").select("ur.roleId").where({ userId });
  const rows = await em
    .createQueryBuilder(Role, "r")
    .select(["r.id", "r.name"])
    .where({ id: { $in: held } })
    .execute("all", true);
  return rows.map((row) => ({ id: str(row.id), name: str(row.name) })).sort(byName);
}

/** One transaction of a role or profile write. */
class WriteContext {
  readonly em: SqlEntityManager;
  readonly dialect: Dialect;
  /**
   * PostgreSQL: this transaction's id, once it has asked for its revisions at COMMIT; the revision comes
   * back in a NOTICE naming it (see the 20261202 migration and CommitRevisions).
   */
  txid: string | undefined;
  /**
   * PostgreSQL: the change-log entries this transaction's statements have pended so far (assigned their
   * revisions at COMMIT, in this order); a group of writes (commitGroup) tells each its own revision by it.
   */
  entries = 0;
  /**
   * PostgreSQL: set before a statement that may write runs (changeRoles, writeProfile). A write that fails
   * after one may have changed the transaction, so its group cannot go on without it.
   */
  writing = false;
  /** PostgreSQL: the users whose lock this transaction holds (a group takes all of its own first). */
  readonly #locked = new Set<string>();
  /** Roles this transaction has read, by id: the writes of a group that name one role read it once. */
  readonly #roles = new Map<string, RoleName>();
  constructor(em: SqlEntityManager, dialect: Dialect) {
    this.em = em;
    this.dialect = dialect;
  }

  /**
   * Serializes writes that touch one user. PostgreSQL: a transaction-scoped advisory lock on the user, and
   * (same statement, one round trip) the request to have this transaction's revisions assigned inside its
   * COMMIT (see the 20261202 migration), so the counter's lock is held only while PostgreSQL commits.
   * SQLite: take the database write lock first, so the transaction never has to upgrade a read lock (which
   * busy_timeout cannot wait for).
   */
  async lockUser(userId: string): Promise<void> {
    if (this.dialect.kind === "postgres") {
      if (this.#locked.has(userId)) return;
      this.#locked.add(userId);
      // Raw: MikroORM has no API for advisory locks; the other is a function of the migrations.
      const rows = await this.em.execute<Row[]>(
        "SELECT pg_advisory_xact_lock(17221, hashtext(?)), authz_defer_revisions() AS txid",
        [userId],
      );
      this.txid = str(rows[0]?.txid);
    } else {
      await this.em
        .createQueryBuilder(RevisionCounter)
        .update({ revision: raw("revision") })
        .where({ id: 1 })
        .execute("run");
    }
  }

  /** SQLite (revisions assigned as rows change, under the one write lock): the counter, read before COMMIT. */
  assignedRevision(): Promise<Revision> {
    return readRevision(this.em);
  }

  /**
   * lockUser for every user of an import batch or a group of writes at once, with the same request for
   * revisions at COMMIT. The locks are taken in the order of their keys, so two transactions taking theirs
   * this way never wait on each other in a cycle.
   */
  async lockUsers(userIds: string[]): Promise<void> {
    if (this.dialect.kind === "postgres") {
      // Raw: MikroORM has no API for advisory locks. One array parameter (UUIDs hold no commas).
      const rows = await this.em.execute<Row[]>(
        `SELECT count(pg_advisory_xact_lock(17221, k)), authz_defer_revisions() AS txid
         FROM (SELECT DISTINCT hashtext(u) AS k FROM unnest(string_to_array(?, ',')) AS u ORDER BY k) AS keys`,
        [userIds.join(",")],
      );
      this.txid = str(rows[0]?.txid);
      for (const userId of userIds) this.#locked.add(userId);
    } else {
      await this.lockUser("");
    }
  }

  /**
   * lockUser and role(roleId) in one statement (one round trip fewer per write). PostgreSQL: the role's row
   * with the lock and the request as extra columns (postgres-writes.ts); when the role does not exist no
   * lock is taken, but the write fails anyway. In a group, whose users are locked already, only the role
   * is read, once per role for the whole group.
   */
  async lockUserAndRole(userId: string, roleId: string): Promise<RoleName> {
    if (this.dialect.kind !== "postgres" || this.#locked.has(userId)) {
      await this.lockUser(userId);
      const known = this.#roles.get(roleId);
      if (known) return known;
      const role = await this.role(roleId);
      this.#roles.set(roleId, role);
      return role;
    }
    const rows = await LOCK_USER_AND_ROLE.execute(this.em.getKysely(), { user: userId, role: roleId });
    const row = rows[0];
    if (!row) throw new NotFoundError(`role ${roleId} not found`);
    this.txid = str(row.txid);
    this.#locked.add(userId);
    return { id: str(row.id), name: str(row.name) };
  }

  /**
   * The user's roles after a role write, in one statement with the counter's row (so there is always a row)
   * whose revision is the write's on SQLite; PostgreSQL assigns it at COMMIT.
   */
  async rolesAndRevision(userId: string): Promise<{ roles: RoleName[]; revision: Revision }> {
    const held = this.em.createQueryBuilder(UserRole, "ur").select("ur.roleId").where({ userId });
    const roles = this.em
      .createQueryBuilder(Role, "r")
      .select(["r.id", "r.name"])
      .where({ id: { $in: held } });
    const rows: Row[] = await this.em
      .createQueryBuilder(RevisionCounter, "c")
      .leftJoin(roles, "ur", { "c.id": 1 })
      .select([sql.ref("c.revision"), sql.ref("ur.id"), sql.ref("ur.name")])
      .where({ id: 1 })
      .execute("all", false);
    return {
      revision: num(rows[0]?.revision ?? 0),
      roles: rows
        .filter((row) => row.id != null)
        .map((row) => ({ id: str(row.id), name: str(row.name) }))
        .sort(byName),
    };
  }

  /** The values of a writing statement's audit row (postgres-writes.ts), stamped now. */
  #audit(userId: string, actorId: string): AuditValues {
    const now = Date.now();
    return {
      user: userId,
      auditId: uuidv7(now),
      actor: actorId.toLowerCase(),
      now: new Date(now).toISOString(),
    };
  }

  /**
   * PostgreSQL, after the user's lock: removes and adds the user's pairs with these roles, audited as
   * `action` when a pair changed, and reads the roles after, in one statement (CHANGE_ROLES).
   */
  async changeRoles(
    userId: string,
    change: { remove?: string[]; add?: string[] },
    action: string,
    actorId: string,
  ): Promise<{ changed: boolean; roles: RoleName[] }> {
    this.writing = true;
    const rows = await CHANGE_ROLES.execute(this.em.getKysely(), {
      ...this.#audit(userId, actorId),
      remove: change.remove ?? [],
      add: change.add ?? [],
      action,
    });
    this.entries += num(rows[0]?.entries ?? 0);
    const roles = rows
      .filter((row) => row.id != null)
      .map((row) => ({ id: str(row.id), name: str(row.name) }))
      .sort(byName);
    // A role read earlier in this transaction (a group reads each once, SetUserRoles one statement before)
    // and removed since is not inserted: the write cannot be what was asked.
    const gone = change.add?.find((id) => !roles.some((role) => role.id === id));
    if (gone !== undefined) throw new NotFoundError(`role ${gone} not found`);
    return { changed: rows[0]?.changed === true, roles };
  }

  /** PostgreSQL, after lockUser: the profile patch, audited when it changed something (WRITE_PROFILE). */
  async writeProfile(
    userId: string,
    patch: ProfilePatch,
    actorId: string,
  ): Promise<{ changed: boolean; profile: ProfileRecord }> {
    this.writing = true;
    const [row] = await WRITE_PROFILE.execute(this.em.getKysely(), {
      ...this.#audit(userId, actorId),
      name: patch.name ?? null,
      organisation: patch.organisation ?? null,
    });
    if (!row) throw new Error("updateProfile: the statement returned no row");
    // One entry for the profile's row when it was written (inserted or changed), none otherwise.
    if (row.changed === true) this.entries += 1;
    return {
      changed: row.changed === true,
      profile: {
        userId: str(row.user_id),
        name: str(row.name),
        organisation: str(row.organisation),
        createdAt: toDate(row.created_at),
        updatedAt: toDate(row.updated_at),
      },
    };
  }

  /**
   * PostgreSQL, after lockUser: SetUserRoles in two statements: which wanted roles exist and which the user
   * holds (ROLES_WANTED_AND_HELD), then, when something changes, changeRoles. Taking Admin away locks and
   * counts the Admin holders in between, as on SQLite.
   */
  async replaceRoles(
    userId: string,
    wanted: string[],
    actorId: string,
  ): Promise<{ changed: boolean; roles: RoleName[] }> {
    const rows = await ROLES_WANTED_AND_HELD.execute(this.em.getKysely(), { user: userId, wanted });
    const known = new Set(rows.filter((row) => row.known).map((row) => str(row.id)));
    const missing = wanted.find((id) => !known.has(id));
    if (missing) throw new NotFoundError(`role ${missing} not found`);
    const held = rows.filter((row) => !row.known).map((row) => ({ id: str(row.id), name: str(row.name) }));
    const remove = held.filter((role) => !wanted.includes(role.id)).map((role) => role.id);
    const add = wanted.filter((id) => !held.some((role) => role.id === id));
    if (remove.length === 0 && add.length === 0) return { changed: false, roles: held.sort(byName) };
    if (remove.includes(ADMIN_ROLE_ID)) await this.refuseRemovingLastAdmin(userId);
    return this.changeRoles(userId, { remove, add }, "Updated user roles", actorId);
  }

  /** A role by id, or NotFoundError. */
  async role(roleId: string): Promise<RoleName> {
    const role = await this.em.findOne(Role, { id: roleId }, { fields: ["id", "name"] });
    if (!role) throw new NotFoundError(`role ${roleId} not found`);
    return { id: str(role.id), name: str(role.name) };
  }

  /**
   * Before taking Admin from `userId`: FailedPreconditionError when they are its only holder. On PostgreSQL
   * the holders' rows stay locked (FOR UPDATE) until commit, so racing removals queue up; SQLite has no row
   * locks: its one writer at a time is the lock.
   */
  async refuseRemovingLastAdmin(userId: string): Promise<void> {
    const holders = await this.em.find(
      UserRole,
      { roleId: ADMIN_ROLE_ID },
      this.dialect.kind === "postgres" ? { lockMode: LockMode.PESSIMISTIC_WRITE } : {},
    );
    if (holders.length === 1 && str(holders[0]?.userId) === userId)
      throw new FailedPreconditionError(NO_ADMIN);
  }

  userRoles(userId: string): Promise<RoleName[]> {
    return readUserRoles(this.em, userId);
  }

  /** Inserts the pairs that are missing; resolves to how many were. */
  async addRoles(userId: string, roleIds: string[]): Promise<number> {
    if (roleIds.length === 0) return 0;
    const result = await this.em
      .createQueryBuilder(UserRole)
      .insert(roleIds.map((roleId) => ({ userId, roleId })))
      .onConflict()
      .ignore()
      .execute("run");
    return result.affectedRows;
  }

  removeRoles(userId: string, roleIds: string[]): Promise<number> {
    if (roleIds.length === 0) return Promise.resolve(0);
    return this.em.nativeDelete(UserRole, { userId, roleId: { $in: roleIds } });
  }

  async audit(action: string, userId: string, actorId: string): Promise<void> {
    const now = Date.now();
    await this.em.insert(UserAudit, {
      id: uuidv7(now),
      action,
      userId,
      modifiedByUserId: actorId.toLowerCase(),
      timestamp: new Date(now),
    });
  }
}

const NO_ADMIN = "the call would leave no user holding Admin";

/** LIMIT values: plain non-negative integers. */
function wholeNumber(value: number): number {
  return Number.isFinite(value) ? Math.max(0, Math.trunc(value)) : 0;
}

/** The rows whose `name` equals `ref` exactly, or else case-insensitively (Unicode case folding). */
function matchName<T extends { name: string }>(rows: T[], ref: string): T[] {
  const exact = rows.filter((row) => row.name === ref);
  if (exact.length > 0) return exact;
  const folded = ref.toLowerCase();
  return rows.filter((row) => row.name.toLowerCase() === folded);
}

/** The tables the userRoles lookup reads, as em.getKysely() sees them (typed from the entity definitions). */
type UserRolesDb = InferKyselyDB<typeof UserRole | typeof RevisionCounter>;

/**
 * readUserRoles' statement: the counter row left-joined with the user_role rows of `users` (a subquery, as
 * the entities are not related), so the revision and the rows come from one snapshot. PostgreSQL binds the
 * ids as one array, so the statement is built once (reused-statement.ts); SQLite binds them as a list, one
 * parameter each, and builds it per call.
 */
function userRolesStatement(kysely: Kysely<UserRolesDb>, users: string[], postgres: boolean) {
  return kysely
    .selectFrom("authz_revision as c")
    .leftJoin(
      (eb) =>
        eb
          .selectFrom("user_role as u")
          .select(["u.user_id", "u.role_id"])
          .where("u.user_id", postgres ? "=" : "in", postgres ? eb.fn.any(eb.val(users)) : users)
          .as("ur"),
      (join) => join.onTrue(),
    )
    .select(["c.revision", "ur.user_id", "ur.role_id"])
    .where("c.id", "=", 1);
}
const USER_ROLES = new ReusedStatement<UserRolesDb, "users", Row>((kysely, value) =>
  userRolesStatement(kysely, value("users") as unknown as string[], true),
);

/** The tables the getProfile lookup reads, as em.getKysely() sees them. */
type ProfilesDb = InferKyselyDB<typeof UserProfile | typeof RevisionCounter>;

/** readProfiles' statement: as userRolesStatement, the counter row left-joined with the users' profiles. */
function profilesStatement(kysely: Kysely<ProfilesDb>, users: string[], postgres: boolean) {
  return kysely
    .selectFrom("authz_revision as c")
    .leftJoin(
      (eb) =>
        eb
          .selectFrom("user_profile as p")
          .select(["p.user_id", "p.name", "p.organisation", "p.created_at", "p.updated_at"])
          .where("p.user_id", postgres ? "=" : "in", postgres ? eb.fn.any(eb.val(users)) : users)
          .as("pr"),
      (join) => join.onTrue(),
    )
    .select(["c.revision", "pr.user_id", "pr.name", "pr.organisation", "pr.created_at", "pr.updated_at"])
    .where("c.id", "=", 1);
}
const PROFILES = new ReusedStatement<ProfilesDb, "users", Row>((kysely, value) =>
  profilesStatement(kysely, value("users") as unknown as string[], true),
);

/**
 * Statements of one lookup (userRoles, getProfile) running at once; more lookups wait and then share one
 * (batched-reads.ts). One: the misses that arrive during a statement's round trip make the next one's
 * batch. Under the cold path's load (64 misses in flight) 4 at once made batches of 5.6 users on average
 * and 6.7-7.7k checks/s, 2 gave 8.3k, 1 made batches of 14.7 and 9.0-9.6k: each statement costs the
 * service a pg round trip and the database a backend wakeup on cores the service shares, so fewer, larger
 * statements win. A lone miss still goes at once.
 */
const READS_AT_ONCE = 1;
/** Users one userRoles or getProfile statement asks about at most. */
const USERS_PER_READ = 500;

class SqlStore implements Store {
  private readonly orm: Orm;
  private readonly database: DatabaseConfig;
  private readonly logger: Logger;
  private readonly pollIntervalMs: number;
  private readonly feeds = new Set<{ close(): Promise<void> }>();
  private readonly pollingFeeds = new Set<PollingFeed>();
  private closed = false;
  /** Users' roles and profiles, read in batches (the cold path's misses). */
  private readonly userRolesReads = new BatchedReads<UserRoles>(
    (users) => this.readUserRoles(users),
    READS_AT_ONCE,
    USERS_PER_READ,
  );
  private readonly profileReads = new BatchedReads<ProfileRead>(
    (users) => this.readProfiles(users),
    READS_AT_ONCE,
    USERS_PER_READ,
  );
  /** lookup()'s EntityManager. */
  private lookups: SqlEntityManager | undefined;
  private warnedNoCommitNotice = false;
  /** PostgreSQL: concurrent writes committed together (group-commit.ts). */
  private readonly groups: GroupCommit<WriteContext> | undefined;

  constructor(orm: Orm, database: DatabaseConfig, logger: Logger, pollIntervalMs: number) {
    this.orm = orm;
    this.database = database;
    this.logger = logger;
    this.pollIntervalMs = pollIntervalMs;
    if (orm.dialect.kind === "postgres") this.groups = new GroupCommit((writes) => this.commitGroup(writes));
  }

  private get dialect(): Dialect {
    return this.orm.dialect;
  }

  /** A read on its own fork (or on `em`); driver errors leave as domain errors. */
  private async read<T>(
    operation: string,
    fn: (em: SqlEntityManager) => Promise<T>,
    em: SqlEntityManager = this.orm.em(),
  ): Promise<T> {
    try {
      return await fn(em);
    } catch (error) {
      throw toDomainError(error, this.logger, operation);
    }
  }

  /**
   * A batched lookup's statement (userRoles, getProfile), on an EntityManager forked once: these read
   * through its getKysely() (the pool's client, as no transaction is ever open on it) and load no entities,
   * so nothing gathers in it. A fork per statement (a UnitOfWork, an identity map, …) was the larger part of
   * the statement's own CPU in a profile of the cold path; two services paired on one core, one forking per
   * statement, answered 1.06–1.13× as many cold checks with this (1.04× between two identical ones).
   */
  private lookup<T>(operation: string, fn: (em: SqlEntityManager) => Promise<T>): Promise<T> {
    this.lookups ??= this.orm.em();
    return this.read(operation, fn, this.lookups);
  }

  /** A read-only snapshot: REPEATABLE READ on PostgreSQL; a SQLite transaction is a snapshot already. */
  private snapshot<T>(operation: string, fn: (em: SqlEntityManager) => Promise<T>): Promise<T> {
    return withRetries(operation, this.logger, () =>
      this.orm
        .em()
        .transactional(
          (em) => fn(em),
          this.dialect.kind === "postgres" ? { isolationLevel: "repeatable read", readOnly: true } : {},
        ),
    );
  }

  /**
   * A write transaction on its own fork, retried on conflicts, with the revision it committed at: on
   * PostgreSQL the one its COMMIT announced (see CommitRevisions), on SQLite the counter read before COMMIT
   * (role writes read it with their last statement already).
   */
  private async transaction<T extends object>(
    operation: string,
    fn: (tx: WriteContext) => Promise<T & { revision?: Revision }>,
  ): Promise<T & { revision: Revision }> {
    const { outcome, revision, txid } = await withRetries(operation, this.logger, () =>
      this.orm.em().transactional(async (em) => {
        const tx = new WriteContext(em, this.dialect);
        const outcome = await fn(tx);
        if (this.dialect.kind === "postgres") return { outcome, revision: undefined, txid: tx.txid };
        return { outcome, revision: outcome.revision ?? (await tx.assignedRevision()), txid: undefined };
      }),
    );
    return { ...outcome, revision: revision ?? (await this.committedRevision(operation, txid)) };
  }

  /** What transaction `txid` committed at, from its NOTICE; without one, the counter now (no older). */
  private async committedRevision(operation: string, txid: string | undefined): Promise<Revision> {
    return this.announcedRevision(txid) ?? this.revisionWithoutNotice(operation);
  }

  /** The revision transaction `txid`'s COMMIT announced in its NOTICE, once; undefined without one. */
  private announcedRevision(txid: string | undefined): Revision | undefined {
    return txid === undefined ? undefined : this.orm.commits?.take(txid);
  }

  /** The counter after a COMMIT that announced no revision (no older than the write's); says so once. */
  private revisionWithoutNotice(operation: string): Promise<Revision> {
    if (!this.warnedNoCommitNotice) {
      this.warnedNoCommitNotice = true;
      this.logger.warn(
        { operation },
        "PostgreSQL sent no revision NOTICE at COMMIT (does a proxy drop notices?): written_at is read after COMMIT instead, which may name a later revision",
      );
    }
    return this.read(operation, readRevision);
  }

  /**
   * A write of `userId`'s rows: on PostgreSQL in a group of the writes waiting at the time (commitGroup), on
   * SQLite in a transaction of its own (one writer at a time: nothing to group), whose subscribers hear of
   * it after COMMIT.
   */
  private async write<T extends object>(
    operation: string,
    userId: string,
    fn: (tx: WriteContext) => Promise<T & { revision?: Revision }>,
  ): Promise<T & { revision: Revision }> {
    if (this.groups) return this.groups.submit(operation, userId, fn) as Promise<T & { revision: Revision }>;
    const result = await this.transaction(operation, fn);
    for (const feed of this.pollingFeeds) void feed.poke();
    return result;
  }

  /**
   * PostgreSQL: a group of writes in one transaction, one COMMIT for all (see group-commit.ts). Every user
   * lock of the group is taken first, in key order, so groups never deadlock on them; then each write runs
   * in arrival order, seeing the ones before it (so the last-Admin rule holds across the group). A write
   * refused before its first writing statement (an unknown role, the last Admin) leaves the transaction as
   * it was: it fails alone and the rest go on. Any other failure aborts the transaction, and then each write
   * goes again in a transaction of its own, where it meets its own error. Each write's revision is its own:
   * the revisions of the group's change-log entries are contiguous, in write order, up to what COMMIT
   * announces.
   */
  private async commitGroup(writes: QueuedWrite<WriteContext>[]): Promise<void> {
    const [first] = writes;
    if (writes.length === 1 && first) return this.alone(first);
    /** Per write, in order: its outcome and the group's entries up to it, or its refusal. */
    type Settled = { write: QueuedWrite<WriteContext> } & (
      | { outcome: object; entries: number }
      | { refused: AuthzError }
    );
    const settled: Settled[] = [];
    let committed: { txid: string | undefined; entries: number };
    try {
      committed = await this.orm.em().transactional(async (em) => {
        const tx = new WriteContext(em, this.dialect);
        await tx.lockUsers(writes.map((write) => write.userId));
        for (const write of writes) {
          tx.writing = false;
          try {
            settled.push({ write, outcome: await write.run(tx), entries: tx.entries });
          } catch (error) {
            if (!(error instanceof AuthzError) || tx.writing) throw error;
            settled.push({ write, refused: error });
          }
        }
        return { txid: tx.txid, entries: tx.entries };
      });
    } catch (error) {
      if (isConnectionError(error)) {
        const failure = toDomainError(error, this.logger, "write");
        for (const write of writes) write.reject(failure);
        return;
      }
      await Promise.all(writes.map((write) => this.alone(write)));
      return;
    }
    const announced = this.announcedRevision(committed.txid);
    const fallback = announced === undefined ? await this.revisionWithoutNotice("write") : undefined;
    for (const result of settled) {
      if ("refused" in result) {
        result.write.reject(result.refused);
        continue;
      }
      // The entries after this write's are the last ones the COMMIT numbered.
      const revision = fallback ?? (announced as Revision) - (committed.entries - result.entries);
      result.write.resolve({ ...result.outcome, revision });
    }
  }

  /** One write in a transaction of its own (retried on conflicts), settling it. */
  private alone(write: QueuedWrite<WriteContext>): Promise<void> {
    return this.transaction(write.operation, write.run).then(write.resolve, write.reject);
  }

  async resolveRole(ref: string): Promise<RoleName | null> {
    return this.read("resolveRole", async (em) => {
      // Names are matched here rather than with SQL lower(), which folds only ASCII on SQLite; the tables
      // hold a handful of rows.
      const qb = em.createQueryBuilder(Role, "r").select(["r.id", "r.name"]);
      if (isUuid(ref)) qb.where({ id: ref.toLowerCase() });
      const rows = (await qb.execute("all", true)).map((row) => ({ id: str(row.id), name: str(row.name) }));
      return (isUuid(ref) ? rows : matchName(rows, ref))[0] ?? null;
    });
  }

  async resolvePermission(ref: string): Promise<PermissionRecord | null> {
    return this.read("resolvePermission", async (em) => {
      const qb = em.createQueryBuilder(Permission, "p").select(["p.id", "p.name", "p.description"]);
      if (isUuid(ref)) qb.where({ id: ref.toLowerCase() });
      const rows = (await qb.execute("all", true)).map((row) => ({
        id: str(row.id),
        name: str(row.name),
        description: str(row.description),
      }));
      return (isUuid(ref) ? rows : matchName(rows, ref))[0] ?? null;
    });
  }

  async loadCatalog(): Promise<Catalog> {
    return this.snapshot("loadCatalog", async (em) => {
      const revision = await readRevision(em);
      const roleRows = await em
        .createQueryBuilder(Role, "r")
        .select(["r.id", "r.name", "r.description"])
        .execute("all", true);
      const pairs = await em
        .createQueryBuilder(RolePermission, "rp")
        .select(["rp.roleId", "rp.permissionId"])
        .execute("all", true);
      const permissionRows = await em
        .createQueryBuilder(Permission, "p")
        .select(["p.id", "p.name", "p.description"])
        .execute("all", true);
      const permissionSets = new Map<string, Set<string>>();
      for (const pair of pairs) {
        const roleId = str(pair.roleId).toLowerCase();
        let set = permissionSets.get(roleId);
        if (!set) {
          set = new Set();
          permissionSets.set(roleId, set);
        }
        set.add(str(pair.permissionId).toLowerCase());
      }
      const roles: RoleRecord[] = roleRows.map((row) => ({
        id: str(row.id),
        name: str(row.name),
        description: str(row.description),
        permissionIds: [...(permissionSets.get(str(row.id).toLowerCase()) ?? [])],
      }));
      return {
        revision,
        roles,
        permissions: permissionRows.map((row) => ({
          id: str(row.id),
          name: str(row.name),
          description: str(row.description),
        })),
      };
    });
  }

  /**
   * One user's roles with the revision they reflect. Lookups that arrive while READS_AT_ONCE of them
   * are already running wait, and then go together as one statement (the same snapshot for all of them):
   * a burst of cache misses costs the service and the database one round trip per batch, not one per user.
   */
  userRoles(userId: string): Promise<UserRoles> {
    return this.userRolesReads.get(userId.toLowerCase());
  }

  /**
   * The roles of these users (lower case) and the revision they reflect, in one statement. Through
   * em.getKysely() (MikroORM's query builder that binds its values as parameters, typed from the entities'
   * tables) rather than createQueryBuilder: the cold path sends one of these per batch of up to
   * USERS_PER_READ users, and building it with createQueryBuilder (criteria walked per value, every UUID
   * quoted into the text) cost 0.4 ms for 16 users and 1.3-1.8 ms for 500, against 0.13 ms with bound values.
   */
  private readUserRoles(users: string[]): Promise<(user: string) => UserRoles> {
    const postgres = this.dialect.kind === "postgres";
    return this.lookup("userRoles", async (em) => {
      const kysely = em.getKysely<UserRolesDb>();
      const rows: Row[] = postgres
        ? await USER_ROLES.execute(kysely, { users })
        : await userRolesStatement(kysely, users, false).execute();
      const roles = new Map<string, string[]>();
      for (const row of rows) {
        if (row.role_id == null) continue;
        const user = str(row.user_id).toLowerCase();
        const held = roles.get(user);
        if (held) held.push(str(row.role_id));
        else roles.set(user, [str(row.role_id)]);
      }
      const revision = num(rows[0]?.revision ?? 0);
      // A copy for each caller: the cache and the caller own their arrays.
      return (user) => ({ revision, roleIds: [...(roles.get(user) ?? [])] });
    });
  }

  /** The profiles of these users (lower case) and the revision they reflect, in one statement (as roles). */
  private readProfiles(users: string[]): Promise<(user: string) => ProfileRead> {
    const postgres = this.dialect.kind === "postgres";
    return this.lookup("getProfile", async (em) => {
      const kysely = em.getKysely<ProfilesDb>();
      const rows: Row[] = postgres
        ? await PROFILES.execute(kysely, { users })
        : await profilesStatement(kysely, users, false).execute();
      const profiles = new Map<string, Row>();
      for (const row of rows) if (row.user_id != null) profiles.set(str(row.user_id).toLowerCase(), row);
      const revision = num(rows[0]?.revision ?? 0);
      return (user) => {
        const row = profiles.get(user);
        return { profile: row === undefined ? null : profileFrom(row), revision };
      };
    });
  }

  async assignRole(userId: string, roleId: string, actorId: string): Promise<RoleWriteResult> {
    const user = userId.toLowerCase();
    return this.write("assignRole", user, async (tx) => {
      const role = await tx.lockUserAndRole(user, roleId.toLowerCase());
      if (this.dialect.kind === "postgres") {
        return tx.changeRoles(user, { add: [role.id] }, `Assigned role ${role.name}`, actorId);
      }
      const inserted = await tx.addRoles(user, [role.id]);
      if (inserted > 0) await tx.audit(`Assigned role ${role.name}`, user, actorId);
      return { changed: inserted > 0, ...(await tx.rolesAndRevision(user)) };
    });
  }

  async revokeRole(userId: string, roleId: string, actorId: string): Promise<RoleWriteResult> {
    const user = userId.toLowerCase();
    return this.write("revokeRole", user, async (tx) => {
      const role = await tx.lockUserAndRole(user, roleId.toLowerCase());
      if (role.id === ADMIN_ROLE_ID) await tx.refuseRemovingLastAdmin(user);
      if (this.dialect.kind === "postgres") {
        return tx.changeRoles(user, { remove: [role.id] }, `Revoked role ${role.name}`, actorId);
      }
      const deleted = await tx.removeRoles(user, [role.id]);
      if (deleted > 0) await tx.audit(`Revoked role ${role.name}`, user, actorId);
      return { changed: deleted > 0, ...(await tx.rolesAndRevision(user)) };
    });
  }

  async setUserRoles(userId: string, roleIds: string[], actorId: string): Promise<RoleWriteResult> {
    const user = userId.toLowerCase();
    const wanted = [...new Set(roleIds.map((id) => id.toLowerCase()))];
    return this.write("setUserRoles", user, async (tx) => {
      await tx.lockUser(user);
      if (this.dialect.kind === "postgres") return tx.replaceRoles(user, wanted, actorId);
      if (wanted.length > 0) {
        const found = await tx.em.find(Role, { id: { $in: wanted } }, { fields: ["id"] });
        const known = new Set(found.map((role) => str(role.id)));
        const missing = wanted.find((id) => !known.has(id));
        if (missing) throw new NotFoundError(`role ${missing} not found`);
      }
      const current = new Set((await tx.userRoles(user)).map((role) => role.id));
      const toRemove = [...current].filter((id) => !wanted.includes(id));
      const toAdd = wanted.filter((id) => !current.has(id));
      if (toRemove.length === 0 && toAdd.length === 0) {
        return { changed: false, ...(await tx.rolesAndRevision(user)) };
      }
      // Only taking Admin away can leave no Admin; then the holders are locked (and counted) first, so
      // racing removals queue. Other calls do not touch those rows (the user's own lock keeps `current` true).
      if (toRemove.includes(ADMIN_ROLE_ID)) await tx.refuseRemovingLastAdmin(user);
      await tx.removeRoles(user, toRemove);
      await tx.addRoles(user, toAdd);
      await tx.audit("Updated user roles", user, actorId);
      return { changed: true, ...(await tx.rolesAndRevision(user)) };
    });
  }

  /**
   * One batch of `flip-authz import`, in one transaction under the batch's user locks: adds the role pairs
   * that are missing and sets the profile fields given (later lines win), auditing each change with
   * `actorId`; a pair already held or a profile already as asked is neither written nor audited.
   */
  async importUsers(lines: readonly ImportLine[], actorId: string): Promise<ImportBatchResult> {
    const users = [...new Set(lines.map((line) => line.userId))];
    const actor = actorId.toLowerCase();
    const result = await this.transaction("import", async (tx) => {
      const em = tx.em;
      await tx.lockUsers(users);
      const held = new Set(
        (
          await em
            .createQueryBuilder(UserRole, "ur")
            .select(["ur.userId", "ur.roleId"])
            .where({ userId: { $in: users } })
            .execute("all", true)
        ).map((row) => `${str(row.userId)}:${str(row.roleId).toLowerCase()}`),
      );
      const now = Date.now();
      const audits: { action: string; userId: string }[] = [];
      const pairs: { userId: string; roleId: string }[] = [];
      for (const line of lines) {
        const key = `${line.userId}:${line.role.id}`;
        if (held.has(key)) continue;
        held.add(key);
        pairs.push({ userId: line.userId, roleId: line.role.id });
        audits.push({ action: `Assigned role ${line.role.name}`, userId: line.userId });
      }
      const wanted = new Map<string, { name?: string; organisation?: string }>();
      for (const line of lines) {
        if (line.name === undefined && line.organisation === undefined) continue;
        const patch = wanted.get(line.userId) ?? {};
        if (line.name !== undefined) patch.name = line.name;
        if (line.organisation !== undefined) patch.organisation = line.organisation;
        wanted.set(line.userId, patch);
      }
      const profiles: {
        userId: string;
        name: string;
        organisation: string;
        createdAt: Date;
        updatedAt: Date;
      }[] = [];
      if (wanted.size > 0) {
        const existing = new Map(
          (
            await em
              .createQueryBuilder(UserProfile, "p")
              .select(["p.userId", "p.name", "p.organisation"])
              .where({ userId: { $in: [...wanted.keys()] } })
              .execute("all", true)
          ).map((row) => [str(row.userId), { name: str(row.name), organisation: str(row.organisation) }]),
        );
        for (const [userId, patch] of wanted) {
          const before = existing.get(userId);
          const name = patch.name ?? before?.name ?? "";
          const organisation = patch.organisation ?? before?.organisation ?? "";
          if (before && before.name === name && before.organisation === organisation) continue;
          profiles.push({ userId, name, organisation, createdAt: new Date(now), updatedAt: new Date(now) });
          audits.push({ action: "Updated user profile", userId });
        }
      }
      if (pairs.length > 0) {
        await em.createQueryBuilder(UserRole).insert(pairs).onConflict().ignore().execute("run");
      }
      if (profiles.length > 0) {
        // New profiles are inserted, existing ones keep created_at.
        await em
          .createQueryBuilder(UserProfile)
          .insert(profiles)
          .onConflict("userId")
          .merge(["name", "organisation", "updatedAt"])
          .execute("run");
      }
      if (audits.length > 0) {
        await em.insertMany(
          UserAudit,
          audits.map((audit) => ({
            id: uuidv7(now),
            action: audit.action,
            userId: audit.userId,
            modifiedByUserId: actor,
            timestamp: new Date(now),
          })),
        );
      }
      return { assigned: pairs.length, profiles: profiles.length };
    });
    if (result.assigned + result.profiles > 0) for (const feed of this.pollingFeeds) void feed.poke();
    return result;
  }

  /** One user's profile with the revision it reflects; lookups share statements as userRoles' do. */
  getProfile(userId: string): Promise<ProfileRead> {
    return this.profileReads.get(userId.toLowerCase());
  }

  async updateProfile(userId: string, patch: ProfilePatch, actorId: string): Promise<ProfileWriteResult> {
    const user = userId.toLowerCase();
    return this.write("updateProfile", user, async (tx) => {
      await tx.lockUser(user);
      if (this.dialect.kind === "postgres") return tx.writeProfile(user, patch, actorId);
      const rows = await tx.em
        .createQueryBuilder(UserProfile, "p")
        .select(["p.userId", "p.name", "p.organisation", "p.createdAt", "p.updatedAt"])
        .where({ userId: user })
        .execute("all", true);
      const now = new Date();
      const found = rows[0];
      const existing: ProfileRecord | null = found
        ? {
            userId: str(found.userId),
            name: str(found.name),
            organisation: str(found.organisation),
            createdAt: toDate(found.createdAt),
            updatedAt: toDate(found.updatedAt),
          }
        : null;
      if (!existing) {
        const profile: ProfileRecord = {
          userId: user,
          name: patch.name ?? "",
          organisation: patch.organisation ?? "",
          createdAt: now,
          updatedAt: now,
        };
        await tx.em.insert(UserProfile, { ...profile });
        await tx.audit("Updated user profile", user, actorId);
        return { changed: true, profile };
      }
      const name = patch.name ?? existing.name;
      const organisation = patch.organisation ?? existing.organisation;
      if (name === existing.name && organisation === existing.organisation) {
        return { changed: false, profile: existing };
      }
      await tx.em.nativeUpdate(UserProfile, { userId: user }, { name, organisation, updatedAt: now });
      await tx.audit("Updated user profile", user, actorId);
      return {
        changed: true,
        profile: { ...existing, name, organisation, updatedAt: now },
      };
    });
  }

  async listAudit(options: { userId?: string; limit: number; before?: AuditCursor }): Promise<AuditPage> {
    const postgres = this.dialect.kind === "postgres";
    const limit = wholeNumber(options.limit);
    return this.read("listAudit", async (em) => {
      const qb = em
        .createQueryBuilder(UserAudit, "a")
        .select(["a.id", "a.action", "a.userId", "a.modifiedByUserId"]);
      if (options.userId !== undefined) qb.andWhere({ userId: options.userId.toLowerCase() });
      if (postgres) {
        // PostgreSQL orders by the millisecond-truncated UTC time (AUDIT_TIME_POSTGRES), so a page boundary
        // inside one millisecond neither skips nor repeats rows; raw because the expression index serves only
        // that exact expression, which the entity's timestamp property cannot name.
        qb.addSelect(raw(`(extract(epoch from ${AUDIT_TIME_POSTGRES}) * 1000)::float8 as ts`));
        if (options.before) {
          qb.andWhere(
            raw(`(${AUDIT_TIME_POSTGRES}, a.id) < (?::timestamp, ?::uuid)`, [
              // A UTC timestamp without zone, matching the expression's type.
              options.before.timestamp.toISOString().replace("Z", ""),
              options.before.id.toLowerCase(),
            ]),
          );
        }
        qb.orderBy([{ [raw(AUDIT_TIME_POSTGRES)]: "desc" }, { id: "desc" }]);
      } else {
        qb.addSelect("a.timestamp");
        if (options.before) {
          const at = options.before.timestamp;
          qb.andWhere({
            $or: [
              { timestamp: { $lt: at } },
              { timestamp: at, id: { $lt: options.before.id.toLowerCase() } },
            ],
          });
        }
        qb.orderBy([{ timestamp: "desc" }, { id: "desc" }]);
      }
      const rows: Row[] = await qb.limit(limit + 1).execute("all", true);
      const events: AuditEvent[] = rows.slice(0, limit).map((row) => ({
        id: str(row.id),
        action: str(row.action),
        userId: str(row.userId),
        modifiedByUserId: str(row.modifiedByUserId),
        timestamp: toDate(postgres ? row.ts : row.timestamp),
      }));
      const last = events[events.length - 1];
      return rows.length > limit && last
        ? { events, next: { timestamp: last.timestamp, id: last.id } }
        : { events };
    });
  }

  async currentRevision(): Promise<Revision> {
    return this.read("currentRevision", (em) => readRevision(em));
  }

  async oldestRevision(): Promise<Revision> {
    return this.read("oldestRevision", async (em) => {
      const [oldest] = await em.find(
        ChangeLogEntry,
        {},
        { orderBy: { revision: "asc" }, limit: 1, fields: ["revision"] },
      );
      return num(oldest?.revision ?? 0);
    });
  }

  async pruneChanges(before: Date): Promise<number> {
    // The first entry to keep is the oldest one recorded at or after `before` (a scan in revision order
    // that stops there: the primary key serves it), or else the newest entry. Everything below it goes,
    // so the log stays a gap-free suffix even if a long transaction recorded an older changed_at late.
    // Two statements: each deletes only below an entry that exists, so a race with a writer or another
    // pruner can delete less, never leave a gap.
    return withRetries("pruneChanges", this.logger, async () => {
      const em = this.orm.em();
      const keep =
        (await em.findOne(
          ChangeLogEntry,
          { changedAt: { $gte: before } },
          { orderBy: { revision: "asc" }, fields: ["revision"] },
        )) ??
        (
          await em.find(ChangeLogEntry, {}, { orderBy: { revision: "desc" }, limit: 1, fields: ["revision"] })
        )[0];
      if (!keep) return 0;
      return em.nativeDelete(ChangeLogEntry, { revision: { $lt: num(keep.revision) } });
    });
  }

  async changesAfter(after: Revision, limit: number): Promise<Change[]> {
    return this.read("changesAfter", async (em) => {
      const rows = await em
        .createQueryBuilder(ChangeLogEntry, "l")
        .select(["l.revision", "l.kind", "l.userId"])
        .where({ revision: { $gt: wholeNumber(after) } })
        .orderBy({ revision: "asc" })
        .limit(wholeNumber(limit))
        .execute("all", true);
      return rows.map((row) => ({
        revision: num(row.revision),
        kind: str(row.kind) as ChangeKind,
        userId: row.userId == null ? null : str(row.userId),
      }));
    });
  }

  async subscribe(after: Revision, listener: ChangeListener): Promise<ChangeSubscription> {
    let feed: PostgresFeed | PollingFeed;
    if (this.database.kind === "postgres") {
      feed = new PostgresFeed(this.database, after, this, listener, this.logger);
    } else {
      const polling = new PollingFeed(after, this, listener, this.logger, this.pollIntervalMs, (closed) =>
        this.pollingFeeds.delete(closed),
      );
      this.pollingFeeds.add(polling);
      feed = polling;
    }
    try {
      await feed.start();
    } catch (error) {
      await feed.close();
      throw toDomainError(error, this.logger, "subscribe");
    }
    return this.track(feed);
  }

  private track(feed: ChangeSubscription): ChangeSubscription {
    this.feeds.add(feed);
    return {
      close: async () => {
        this.feeds.delete(feed);
        await feed.close();
      },
    };
  }

  /** See storeSql. Raw by design: arbitrary SQL from tests and diagnostics, not a store read or write. */
  rawSql(sql: string, params: unknown[]): Promise<Row[]> {
    return this.orm.em().execute<Row[]>(sql, params);
  }

  async ping(): Promise<void> {
    // Raw: the smallest statement that proves the database answers.
    await this.read("ping", (em) => em.execute("SELECT 1"));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.feeds].map((feed) => feed.close().catch(() => {})));
    this.feeds.clear();
    await this.orm.orm.close(true);
  }
}

export interface ImportBatchResult {
  /** Role pairs added. */
  assigned: number;
  /** Profiles created or changed. */
  profiles: number;
  revision: Revision;
}

/** Writes one batch of `flip-authz import` (see SqlStore.importUsers). Not part of the Store contract. */
export function importUsers(
  store: Store,
  lines: readonly ImportLine[],
  actorId: string,
): Promise<ImportBatchResult> {
  if (!(store instanceof SqlStore)) throw new Error("not a store opened by openStore");
  return store.importUsers(lines, actorId);
}

/**
 * Runs one SQL statement (`?` placeholders) on a store's own connection: for tests and diagnostics that must
 * see what the store sees (a SQLite `:memory:` database has no other way in). Not part of the Store contract.
 */
export async function storeSql(store: Store, sql: string, params: unknown[] = []): Promise<Row[]> {
  if (!(store instanceof SqlStore)) throw new Error("not a store opened by openStore");
  return store.rawSql(sql, params);
}

function profileFrom(row: Row): ProfileRecord {
  return {
    userId: str(row.user_id),
    name: str(row.name),
    organisation: str(row.organisation),
    createdAt: toDate(row.created_at),
    updatedAt: toDate(row.updated_at),
  };
}
