// The storage the domain asks for. src/store/ implements it over MikroORM (PostgreSQL and SQLite);
// the domain never sees SQL, the ORM or a driver error: the store turns those into domain errors
// (connection lost → UnavailableError, a conflict that survives retries → AbortedError).
// The caches need only a part of it, ReadSource and ChangeFeed: src/upstream/ implements those too, over
// an upstream flip-authz, so a follower runs the same cached reader without a database.

/**
 * A position in the change log: every committed change to roles, permissions, role assignments and
 * profiles gets the next revision, in commit order, whoever wrote it (this service, the CLI, plain SQL).
 */
export type Revision = number;

export interface PermissionRecord {
  id: string;
  name: string;
  description: string;
}

export interface RoleRecord {
  id: string;
  name: string;
  description: string;
  /** Ids of the permissions the role carries, distinct, in no particular order. */
  permissionIds: string[];
}

/** The role→permission map, read in one snapshot, with the revision that snapshot reflects. */
export interface Catalog {
  permissions: PermissionRecord[];
  roles: RoleRecord[];
  revision: Revision;
}

export interface RoleName {
  id: string;
  name: string;
}

export interface UserRoles {
  roleIds: string[];
  /** The revision the read reflects (every change up to it is included). */
  revision: Revision;
}

export interface RoleWriteResult {
  /** False when the call found the user's roles already as asked; then no audit row was written. */
  changed: boolean;
  /** The user's full set of roles after the call, sorted by name. */
  roles: RoleName[];
  /** The revision of this change when changed; otherwise a revision the unchanged state reflects. */
  revision: Revision;
}

/**
 * What a read must reflect: `cached` may be a moment stale; `fresh` must reflect every change up to
 * `atLeast`; `full` must reflect every change committed before the read began (the database's latest).
 */
export type Consistency = { kind: "cached" } | { kind: "fresh"; atLeast: Revision } | { kind: "full" };

export interface ProfileRecord {
  userId: string;
  name: string;
  organisation: string;
  createdAt: Date;
  updatedAt: Date;
}

/** A user's profile row (null when there is none), read in one snapshot with the revision it reflects. */
export interface ProfileRead {
  profile: ProfileRecord | null;
  revision: Revision;
}

export interface ProfilePatch {
  name?: string;
  organisation?: string;
}

export interface ProfileWriteResult {
  changed: boolean;
  profile: ProfileRecord;
  revision: Revision;
}

export interface AuditEvent {
  id: string;
  action: string;
  userId: string;
  modifiedByUserId: string;
  timestamp: Date;
}

/** Keyset position in the audit listing: the last event of the previous page. */
export interface AuditCursor {
  timestamp: Date;
  id: string;
}

export interface AuditPage {
  events: AuditEvent[];
  /** Set when more events follow. */
  next?: AuditCursor;
}

export type ChangeKind = "user_roles" | "role_permissions" | "profile";

export interface Change {
  revision: Revision;
  kind: ChangeKind;
  /**
   * The user whose roles or profile changed; null for role_permissions, and for user_roles or profile when
   * every user's changed at once (a TRUNCATE).
   */
  userId: string | null;
}

/** Live notifications of committed changes, from any writer. */
export interface ChangeSubscription {
  close(): Promise<void>;
}

export interface ChangeListener {
  /** Changes in revision order, each once. */
  onChanges(changes: Change[]): void;
  /**
   * The feed lost its source (the LISTEN connection dropped): changes may have been missed until
   * `onResumed`. Caches must stop trusting themselves.
   */
  onInterrupted(error: Error): void;
  /** The feed is live again and has replayed every change it may have missed. */
  onResumed(): void;
  /**
   * The feed works, but not the way it should, and an operator should know: `reason` says why (LISTEN
   * broken by a transaction pooler, so the change log is polled instead).
   */
  onDegraded?(reason: string): void;
}

/**
 * Where the caches are filled from. Each read says which revision it reflects. `consistency` is what the
 * read must reflect at least; the database's reads always reflect everything committed, so the store
 * ignores it, while an upstream flip-authz is asked for that much.
 */
export interface ReadSource {
  loadCatalog(consistency?: Consistency): Promise<Catalog>;
  userRoles(userId: string, consistency?: Consistency): Promise<UserRoles>;
  getProfile(userId: string, consistency?: Consistency): Promise<ProfileRead>;
}

/** Where the change hub hears of changes. */
export interface ChangeFeed {
  currentRevision(): Promise<Revision>;
  /** Start delivering live changes with revision > `after`. */
  subscribe(after: Revision, listener: ChangeListener): Promise<ChangeSubscription>;
}

export interface Store extends ReadSource, ChangeFeed {
  /** Role and permission references: a name (case-insensitive, exact case preferred) or a UUID. */
  resolveRole(ref: string): Promise<RoleName | null>;
  resolvePermission(ref: string): Promise<PermissionRecord | null>;

  /**
   * Role writes, each in one transaction with its users_audit row (actions as in API.md). Throws
   * NotFoundError when a role id no longer exists, FailedPreconditionError when the call would leave no
   * user holding Admin while one did (also when two calls race), AbortedError after retries.
   */
  assignRole(userId: string, roleId: string, actorId: string): Promise<RoleWriteResult>;
  revokeRole(userId: string, roleId: string, actorId: string): Promise<RoleWriteResult>;
  setUserRoles(userId: string, roleIds: string[], actorId: string): Promise<RoleWriteResult>;

  /** Upsert; missing fields of a new profile are empty strings; audited only when something changed. */
  updateProfile(userId: string, patch: ProfilePatch, actorId: string): Promise<ProfileWriteResult>;

  /** Newest first (timestamp, then id, descending), optionally for one user. */
  listAudit(options: { userId?: string; limit: number; before?: AuditCursor }): Promise<AuditPage>;

  /** The oldest revision still in the change log (0 when it is empty); rises as `pruneChanges` deletes. */
  oldestRevision(): Promise<Revision>;
  /** Changes with revision > `after`, in order, at most `limit`. */
  changesAfter(after: Revision, limit: number): Promise<Change[]>;
  /**
   * Retention: deletes the change-log entries recorded before `before`, oldest first, so what remains is
   * always every revision from `oldestRevision()` up to the newest (never a gap). The newest entry is
   * never deleted, so `oldestRevision()` and `currentRevision()` stay meaningful however old it is.
   * Idempotent and safe to run from several processes at once. Resolves to how many entries it deleted.
   */
  pruneChanges(before: Date): Promise<number>;

  /** Resolves when the database answers. */
  ping(): Promise<void>;
  close(): Promise<void>;
}
