// The Store (src/authz/store.ts) over MikroORM on PostgreSQL or SQLite. Reads and writes are raw SQL on a
// fresh EntityManager fork per operation; every write runs in one transaction with its users_audit row.

import type { SqlEntityManager } from "@mikro-orm/sql";
import { FailedPreconditionError, NotFoundError } from "../authz/errors.ts";
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
import type { DatabaseConfig } from "../config.ts";
import { PollingFeed, PostgresFeed } from "./change-feed.ts";
import { toDomainError, withRetries } from "./errors.ts";
import { type Logger, silentLogger } from "./logger.ts";
import { runMigrations } from "./migrate.ts";
import { AUDIT_TIME_POSTGRES } from "./migrations/20261130-flip-schema.ts";
import { createOrm, type Dialect, type Orm, toDate } from "./orm.ts";
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

/** One transaction of a role or profile write. */
class WriteContext {
  readonly em: SqlEntityManager;
  readonly dialect: Dialect;
  constructor(em: SqlEntityManager, dialect: Dialect) {
    this.em = em;
    this.dialect = dialect;
  }

  all(sql: string, params: unknown[] = []): Promise<Row[]> {
    return this.em.execute<Row[]>(sql, params);
  }

  async run(sql: string, params: unknown[] = []): Promise<number> {
    const result = await this.em.execute<{ affectedRows: number }>(sql, params, "run");
    return result.affectedRows;
  }

  async revision(): Promise<Revision> {
    const rows = await this.all("SELECT revision FROM authz_revision WHERE id = 1");
    return num(rows[0]?.revision ?? 0);
  }

  /**
   * Serializes writes that touch one user. PostgreSQL: a transaction-scoped advisory lock on the user.
   * SQLite: take the database write lock first, so the transaction never has to upgrade a read lock (which
   * busy_timeout cannot wait for).
   */
  async lockUser(userId: string): Promise<void> {
    if (this.dialect.kind === "postgres") {
      await this.all("SELECT pg_advisory_xact_lock(17221, hashtext(?))", [userId]);
    } else {
      await this.run("UPDATE authz_revision SET revision = revision WHERE id = 1");
    }
  }

  /** Current Admin holders; on PostgreSQL their rows stay locked until commit, so racing revokes queue up. */
  async lockAdmins(): Promise<Set<string>> {
    const lock = this.dialect.kind === "postgres" ? " FOR UPDATE" : "";
    const rows = await this.all(`SELECT user_id FROM user_role WHERE role_id = ?${lock}`, [ADMIN_ROLE_ID]);
    return new Set(rows.map((row) => str(row.user_id)));
  }

  async userRoles(userId: string): Promise<RoleName[]> {
    const rows = await this.all(
      "SELECT r.id, r.name FROM user_role ur JOIN roles r ON r.id = ur.role_id WHERE ur.user_id = ?",
      [userId],
    );
    return rows.map((row) => ({ id: str(row.id), name: str(row.name) })).sort(byName);
  }

  async audit(action: string, userId: string, actorId: string): Promise<void> {
    const now = Date.now();
    await this.run(
      `INSERT INTO users_audit (id, action, user_id, modified_by_user_id, "timestamp") VALUES (?, ?, ?, ?, ?)`,
      [uuidv7(now), action, userId, actorId.toLowerCase(), this.dialect.timestamp(new Date(now))],
    );
  }

  insertUserRoleSql(): string {
    return this.dialect.kind === "postgres"
      ? "INSERT INTO user_role (user_id, role_id) VALUES (?, ?) ON CONFLICT DO NOTHING"
      : "INSERT OR IGNORE INTO user_role (user_id, role_id) VALUES (?, ?)";
  }
}

const NO_ADMIN = "the call would leave no user holding Admin";

/** Parameters are inlined into the SQL text by the ORM: numbers must be plain non-negative integers. */
function wholeNumber(value: number): number {
  return Number.isFinite(value) ? Math.max(0, Math.trunc(value)) : 0;
}

/** The rows whose `column` equals `ref` exactly, or else case-insensitively (Unicode case folding). */
function matchName(rows: Row[], column: string, ref: string): Row[] {
  const exact = rows.filter((row) => row[column] === ref);
  if (exact.length > 0) return exact;
  const folded = ref.toLowerCase();
  return rows.filter((row) => str(row[column]).toLowerCase() === folded);
}

class SqlStore implements Store {
  private readonly orm: Orm;
  private readonly database: DatabaseConfig;
  private readonly logger: Logger;
  private readonly pollIntervalMs: number;
  private readonly feeds = new Set<{ close(): Promise<void> }>();
  private readonly pollingFeeds = new Set<PollingFeed>();
  private closed = false;

  constructor(orm: Orm, database: DatabaseConfig, logger: Logger, pollIntervalMs: number) {
    this.orm = orm;
    this.database = database;
    this.logger = logger;
    this.pollIntervalMs = pollIntervalMs;
  }

  private get dialect(): Dialect {
    return this.orm.dialect;
  }

  /** A read on its own fork; driver errors leave as domain errors. */
  private async read<T>(operation: string, fn: (em: SqlEntityManager) => Promise<T>): Promise<T> {
    try {
      return await fn(this.orm.em());
    } catch (error) {
      throw toDomainError(error, this.logger, operation);
    }
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

  /** A write transaction, retried on conflicts; SQLite subscribers hear of it after commit. */
  private async write<T>(operation: string, fn: (tx: WriteContext) => Promise<T>): Promise<T> {
    const result = await withRetries(operation, this.logger, () =>
      this.orm.em().transactional((em) => fn(new WriteContext(em, this.dialect))),
    );
    for (const feed of this.pollingFeeds) void feed.poke();
    return result;
  }

  async resolveRole(ref: string): Promise<RoleName | null> {
    return this.read("resolveRole", async (em) => {
      // Names are matched here rather than with SQL lower(), which folds only ASCII on SQLite; the tables
      // hold a handful of rows.
      const rows = isUuid(ref)
        ? await em.execute<Row[]>("SELECT id, name FROM roles WHERE id = ?", [ref.toLowerCase()])
        : matchName(await em.execute<Row[]>("SELECT id, name FROM roles"), "name", ref);
      const row = rows[0];
      return row ? { id: str(row.id), name: str(row.name) } : null;
    });
  }

  async resolvePermission(ref: string): Promise<PermissionRecord | null> {
    return this.read("resolvePermission", async (em) => {
      const select = "SELECT id, permission_name, permission_description FROM permission";
      const rows = isUuid(ref)
        ? await em.execute<Row[]>(`${select} WHERE id = ?`, [ref.toLowerCase()])
        : matchName(await em.execute<Row[]>(select), "permission_name", ref);
      const row = rows[0];
      return row
        ? { id: str(row.id), name: str(row.permission_name), description: str(row.permission_description) }
        : null;
    });
  }

  async loadCatalog(): Promise<Catalog> {
    return this.snapshot("loadCatalog", async (em) => {
      const roleRows = await em.execute<Row[]>(
        `SELECT (SELECT revision FROM authz_revision WHERE id = 1) AS revision, r.id, r.name, r.description,
           rp.permission_id
         FROM roles r LEFT JOIN role_permission rp ON rp.role_id = r.id`,
      );
      const permissionRows = await em.execute<Row[]>(
        "SELECT id, permission_name, permission_description FROM permission",
      );
      const roles = new Map<string, RoleRecord>();
      const permissionSets = new Map<string, Set<string>>();
      let revision = 0;
      for (const row of roleRows) {
        revision = num(row.revision ?? 0);
        const id = str(row.id);
        let role = roles.get(id);
        if (!role) {
          role = { id, name: str(row.name), description: str(row.description), permissionIds: [] };
          roles.set(id, role);
          permissionSets.set(id, new Set());
        }
        if (row.permission_id != null) permissionSets.get(id)?.add(str(row.permission_id).toLowerCase());
      }
      for (const [id, set] of permissionSets) {
        const role = roles.get(id);
        if (role) role.permissionIds = [...set];
      }
      if (roleRows.length === 0) {
        const rows = await em.execute<Row[]>("SELECT revision FROM authz_revision WHERE id = 1");
        revision = num(rows[0]?.revision ?? 0);
      }
      return {
        revision,
        roles: [...roles.values()],
        permissions: permissionRows.map((row) => ({
          id: str(row.id),
          name: str(row.permission_name),
          description: str(row.permission_description),
        })),
      };
    });
  }

  async userRoles(userId: string): Promise<UserRoles> {
    return this.read("userRoles", async (em) => {
      // One statement, so the revision and the rows come from one snapshot.
      const rows = await em.execute<Row[]>(
        `SELECT c.revision, ur.role_id FROM authz_revision c
         LEFT JOIN user_role ur ON ur.user_id = ? WHERE c.id = 1`,
        [userId.toLowerCase()],
      );
      return {
        revision: num(rows[0]?.revision ?? 0),
        roleIds: rows.filter((row) => row.role_id != null).map((row) => str(row.role_id)),
      };
    });
  }

  async assignRole(userId: string, roleId: string, actorId: string): Promise<RoleWriteResult> {
    const user = userId.toLowerCase();
    const role = roleId.toLowerCase();
    return this.write("assignRole", async (tx) => {
      await tx.lockUser(user);
      const before = await tx.revision();
      const found = await tx.all("SELECT id, name FROM roles WHERE id = ?", [role]);
      const roleRow = found[0];
      if (!roleRow) throw new NotFoundError(`role ${role} not found`);
      const inserted = await tx.run(tx.insertUserRoleSql(), [user, role]);
      if (inserted === 0) return { changed: false, roles: await tx.userRoles(user), revision: before };
      await tx.audit(`Assigned role ${str(roleRow.name)}`, user, actorId);
      return { changed: true, roles: await tx.userRoles(user), revision: await tx.revision() };
    });
  }

  async revokeRole(userId: string, roleId: string, actorId: string): Promise<RoleWriteResult> {
    const user = userId.toLowerCase();
    const role = roleId.toLowerCase();
    return this.write("revokeRole", async (tx) => {
      await tx.lockUser(user);
      const found = await tx.all("SELECT id, name FROM roles WHERE id = ?", [role]);
      const roleRow = found[0];
      if (!roleRow) throw new NotFoundError(`role ${role} not found`);
      if (role === ADMIN_ROLE_ID) {
        const admins = await tx.lockAdmins();
        if (admins.has(user) && admins.size === 1) throw new FailedPreconditionError(NO_ADMIN);
      }
      const before = await tx.revision();
      const deleted = await tx.run("DELETE FROM user_role WHERE user_id = ? AND role_id = ?", [user, role]);
      if (deleted === 0) return { changed: false, roles: await tx.userRoles(user), revision: before };
      await tx.audit(`Revoked role ${str(roleRow.name)}`, user, actorId);
      return { changed: true, roles: await tx.userRoles(user), revision: await tx.revision() };
    });
  }

  async setUserRoles(userId: string, roleIds: string[], actorId: string): Promise<RoleWriteResult> {
    const user = userId.toLowerCase();
    const wanted = [...new Set(roleIds.map((id) => id.toLowerCase()))];
    return this.write("setUserRoles", async (tx) => {
      await tx.lockUser(user);
      if (wanted.length > 0) {
        const found = await tx.all("SELECT id FROM roles WHERE id IN (?)", [wanted]);
        const known = new Set(found.map((row) => str(row.id)));
        const missing = wanted.find((id) => !known.has(id));
        if (missing) throw new NotFoundError(`role ${missing} not found`);
      }
      const admins = wanted.includes(ADMIN_ROLE_ID) ? null : await tx.lockAdmins();
      const before = await tx.revision();
      const current = new Set((await tx.userRoles(user)).map((role) => role.id));
      const toRemove = [...current].filter((id) => !wanted.includes(id));
      const toAdd = wanted.filter((id) => !current.has(id));
      if (toRemove.length === 0 && toAdd.length === 0) {
        return { changed: false, roles: await tx.userRoles(user), revision: before };
      }
      if (admins && toRemove.includes(ADMIN_ROLE_ID) && admins.size === 1 && admins.has(user)) {
        throw new FailedPreconditionError(NO_ADMIN);
      }
      if (toRemove.length > 0) {
        await tx.run("DELETE FROM user_role WHERE user_id = ? AND role_id IN (?)", [user, toRemove]);
      }
      for (const id of toAdd) await tx.run(tx.insertUserRoleSql(), [user, id]);
      await tx.audit("Updated user roles", user, actorId);
      return { changed: true, roles: await tx.userRoles(user), revision: await tx.revision() };
    });
  }

  async getProfile(userId: string): Promise<ProfileRead> {
    return this.read("getProfile", async (em) => {
      const d = this.dialect;
      // One statement, so the revision and the row come from one snapshot.
      const rows = await em.execute<Row[]>(
        `SELECT c.revision, p.user_id, p.name, p.organisation, ${d.millis("p.created_at")} AS created_at,
           ${d.millis("p.updated_at")} AS updated_at
         FROM authz_revision c LEFT JOIN user_profile p ON p.user_id = ? WHERE c.id = 1`,
        [userId.toLowerCase()],
      );
      const row = rows[0];
      return {
        profile: row?.user_id != null ? this.profileFrom(row) : null,
        revision: num(row?.revision ?? 0),
      };
    });
  }

  private profileSelect(): string {
    const d = this.dialect;
    return `SELECT user_id, name, organisation, ${d.millis("created_at")} AS created_at,
      ${d.millis("updated_at")} AS updated_at FROM user_profile WHERE user_id = ?`;
  }

  private profileFrom(row: Row): ProfileRecord {
    return {
      userId: str(row.user_id),
      name: str(row.name),
      organisation: str(row.organisation),
      createdAt: toDate(row.created_at),
      updatedAt: toDate(row.updated_at),
    };
  }

  async updateProfile(userId: string, patch: ProfilePatch, actorId: string): Promise<ProfileWriteResult> {
    const user = userId.toLowerCase();
    return this.write("updateProfile", async (tx) => {
      await tx.lockUser(user);
      const before = await tx.revision();
      const rows = await tx.all(this.profileSelect(), [user]);
      const now = new Date();
      const existing = rows[0] ? this.profileFrom(rows[0]) : null;
      if (!existing) {
        const profile: ProfileRecord = {
          userId: user,
          name: patch.name ?? "",
          organisation: patch.organisation ?? "",
          createdAt: now,
          updatedAt: now,
        };
        await tx.run(
          "INSERT INTO user_profile (user_id, name, organisation, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
          [
            user,
            profile.name,
            profile.organisation,
            this.dialect.timestamp(now),
            this.dialect.timestamp(now),
          ],
        );
        await tx.audit("Updated user profile", user, actorId);
        return { changed: true, profile, revision: await tx.revision() };
      }
      const name = patch.name ?? existing.name;
      const organisation = patch.organisation ?? existing.organisation;
      if (name === existing.name && organisation === existing.organisation) {
        return { changed: false, profile: existing, revision: before };
      }
      await tx.run("UPDATE user_profile SET name = ?, organisation = ?, updated_at = ? WHERE user_id = ?", [
        name,
        organisation,
        this.dialect.timestamp(now),
        user,
      ]);
      await tx.audit("Updated user profile", user, actorId);
      return {
        changed: true,
        profile: { ...existing, name, organisation, updatedAt: now },
        revision: await tx.revision(),
      };
    });
  }

  async listAudit(options: { userId?: string; limit: number; before?: AuditCursor }): Promise<AuditPage> {
    const d = this.dialect;
    // PostgreSQL: the millisecond-truncated UTC time (see AUDIT_TIME_POSTGRES), so a page boundary inside
    // one millisecond neither skips nor repeats rows, and the expression index serves the order.
    const time = d.kind === "postgres" ? AUDIT_TIME_POSTGRES : `"timestamp"`;
    const where: string[] = [];
    const params: unknown[] = [];
    if (options.userId !== undefined) {
      where.push("user_id = ?");
      params.push(options.userId.toLowerCase());
    }
    if (options.before) {
      const id = options.before.id.toLowerCase();
      if (d.kind === "postgres") {
        where.push(`(${time}, id) < (?::timestamp, ?::uuid)`);
        // A UTC timestamp without zone, matching the expression's type.
        params.push(options.before.timestamp.toISOString().replace("Z", ""), id);
      } else {
        const at = d.timestamp(options.before.timestamp);
        where.push(`("timestamp" < ? OR ("timestamp" = ? AND id < ?))`);
        params.push(at, at, id);
      }
    }
    const limit = wholeNumber(options.limit);
    params.push(limit + 1);
    const millis = d.kind === "postgres" ? `(extract(epoch from ${time}) * 1000)::float8` : time;
    const sql = `SELECT id, action, user_id, modified_by_user_id, ${millis} AS ts FROM users_audit
      ${where.length > 0 ? `WHERE ${where.join(" AND ")}` : ""}
      ORDER BY ${time} DESC, id DESC LIMIT ?`;
    return this.read("listAudit", async (em) => {
      const rows = await em.execute<Row[]>(sql, params);
      const events: AuditEvent[] = rows.slice(0, limit).map((row) => ({
        id: str(row.id),
        action: str(row.action),
        userId: str(row.user_id),
        modifiedByUserId: str(row.modified_by_user_id),
        timestamp: toDate(row.ts),
      }));
      const last = events[events.length - 1];
      return rows.length > limit && last
        ? { events, next: { timestamp: last.timestamp, id: last.id } }
        : { events };
    });
  }

  async currentRevision(): Promise<Revision> {
    return this.read("currentRevision", async (em) => {
      const rows = await em.execute<Row[]>("SELECT revision FROM authz_revision WHERE id = 1");
      return num(rows[0]?.revision ?? 0);
    });
  }

  async oldestRevision(): Promise<Revision> {
    return this.read("oldestRevision", async (em) => {
      const rows = await em.execute<Row[]>("SELECT min(revision) AS revision FROM authz_change_log");
      return num(rows[0]?.revision ?? 0);
    });
  }

  async pruneChanges(before: Date): Promise<number> {
    // The first entry to keep is the oldest one recorded at or after `before` (a scan in revision order
    // that stops there: the primary key serves it), or else the newest entry. Everything below it goes,
    // so the log stays a gap-free suffix even if a long transaction recorded an older changed_at late.
    const at = this.dialect.timestamp(before);
    const cast = this.dialect.kind === "postgres" ? "CAST(? AS timestamptz)" : "?";
    const sql = `DELETE FROM authz_change_log WHERE revision < coalesce(
        (SELECT revision FROM authz_change_log WHERE changed_at >= ${cast} ORDER BY revision LIMIT 1),
        (SELECT max(revision) FROM authz_change_log))`;
    const deleted = await withRetries("pruneChanges", this.logger, () =>
      this.orm.em().execute<{ affectedRows: number }>(sql, [at], "run"),
    );
    return deleted.affectedRows;
  }

  async changesAfter(after: Revision, limit: number): Promise<Change[]> {
    return this.read("changesAfter", async (em) => {
      const rows = await em.execute<Row[]>(
        "SELECT revision, kind, user_id FROM authz_change_log WHERE revision > ? ORDER BY revision LIMIT ?",
        [wholeNumber(after), wholeNumber(limit)],
      );
      return rows.map((row) => ({
        revision: num(row.revision),
        kind: str(row.kind) as ChangeKind,
        userId: row.user_id == null ? null : str(row.user_id),
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

  /** See storeSql. */
  rawSql(sql: string, params: unknown[]): Promise<Row[]> {
    return this.orm.em().execute<Row[]>(sql, params);
  }

  async ping(): Promise<void> {
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

/**
 * Runs one SQL statement (`?` placeholders) on a store's own connection: for tests and diagnostics that must
 * see what the store sees (a SQLite `:memory:` database has no other way in). Not part of the Store contract.
 */
export async function storeSql(store: Store, sql: string, params: unknown[] = []): Promise<Row[]> {
  if (!(store instanceof SqlStore)) throw new Error("not a store opened by openStore");
  return store.rawSql(sql, params);
}
