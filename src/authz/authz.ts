// The domain operations behind every RPC: validate the request (errors name the field), resolve
// references, read through the reader (cached or not), write through the store. No gRPC, no ORM here.
// AuthzQueries needs only a reader, so a follower (which keeps no database) runs it too; Authz adds what
// needs the store: writes, the audit log and the change log.

import type { ChangeHub } from "./change-hub.ts";
import { InvalidArgumentError, NotFoundError } from "./errors.ts";
import { parseUuid } from "./ids.ts";
import { CACHED, type Consistency, FULL, type Reader, type UserView } from "./reader.ts";
import { formatRevision, parseRevision } from "./revision.ts";
import type { IndexedRole, RoleIndex } from "./role-index.ts";
import type {
  AuditCursor,
  AuditEvent,
  Change,
  ChangeKind,
  PermissionRecord,
  ProfileRecord,
  Revision,
  RoleName,
  RoleWriteResult,
  Store,
} from "./store.ts";

export interface CheckInput {
  userId: string;
  permission: string;
  fullyConsistent: boolean;
  atLeastAsFresh: string;
}

export interface CheckOutput {
  allowed: boolean;
  grantedBy: string[];
  checkedAt: string;
}

export interface RolesOutput {
  changed: boolean;
  roles: string[];
  writtenAt: string;
}

export interface Profile {
  userId: string;
  name: string;
  organisation: string;
  roles: string[];
  permissions: string[];
  createdAt?: Date;
  updatedAt?: Date;
}

export interface ProfileOutput {
  profile: Profile;
  /** read_at, or written_at after a write. */
  revision: string;
}

export interface RoleOutput {
  id: string;
  name: string;
  description: string;
  permissions: string[];
}

export interface AuditPageOutput {
  events: AuditEvent[];
  nextPageToken: string;
}

export interface ChangeOutput {
  revision: string;
  kind: ChangeKind;
  userId: string;
}

export interface AuthzQueriesOptions {
  reader: Reader;
  maxBatch: number;
}

export interface AuthzOptions extends AuthzQueriesOptions {
  store: Store;
  hub: ChangeHub;
}

export const MAX_TEXT_LENGTH = 255;
const DEFAULT_PAGE_SIZE = 50;
const MAX_PAGE_SIZE = 500;
/** A watcher that falls this far behind goes back to reading the change log. */
const WATCH_BUFFER_LIMIT = 10_000;

/** How much of a caller's reference an error message repeats: messages travel in a gRPC trailer. */
const MAX_ECHO = 64;

/** The reference as an error message quotes it, cut to MAX_ECHO code points. */
function quote(ref: string): string {
  const points = [...ref];
  return JSON.stringify(points.length <= MAX_ECHO ? ref : `${points.slice(0, MAX_ECHO).join("")}…`);
}

function required(value: string, field: string): string {
  if (value === "") throw new InvalidArgumentError(field, "required");
  return value;
}

/** What a read asked with `at_least_as_fresh` (named `field` in errors) must reflect. */
function freshness(atLeastAsFresh: string, field: string): Consistency {
  const atLeast = parseRevision(atLeastAsFresh, field);
  return atLeast === undefined ? CACHED : { kind: "fresh", atLeast };
}

function consistencyOf(input: CheckInput, prefix: string): Consistency {
  const consistency = freshness(input.atLeastAsFresh, `${prefix}at_least_as_fresh`);
  return input.fullyConsistent ? FULL : consistency;
}

/**
 * A read that reflects less than the revision asked for has read everything committed (the cached reader
 * only answers from memory when it has applied that much): the revision has not been written (yet).
 */
function assertWritten(consistency: Consistency, revision: Revision, field: string): void {
  if (consistency.kind === "fresh" && revision < consistency.atLeast) {
    throw new InvalidArgumentError(
      field,
      `revision ${consistency.atLeast} has not been written (the latest is ${revision})`,
    );
  }
}

/** A check request, validated; `prefix` names its place in a batch (`checks[3].`) for later errors. */
interface CheckQuery {
  userId: string;
  permissionRef: string;
  consistency: Consistency;
  prefix: string;
}

function parseCheck(input: CheckInput, prefix: string): CheckQuery {
  return {
    userId: parseUuid(input.userId, `${prefix}user_id`),
    permissionRef: required(input.permission, `${prefix}permission`),
    consistency: consistencyOf(input, prefix),
    prefix,
  };
}

/** Whether the roles in `view` grant the permission (a name or UUID); false when no such permission exists. */
function holdsIn(view: UserView, permissionName: string): boolean {
  const permission = view.index.resolvePermission(permissionName);
  return permission !== undefined && view.index.grantedBy(view.roles, permission.id).length > 0;
}

function text(value: string | undefined, field: string): string | undefined {
  if (value === undefined) return undefined;
  if ([...value].length > MAX_TEXT_LENGTH) {
    throw new InvalidArgumentError(field, `must be at most ${MAX_TEXT_LENGTH} characters`);
  }
  if (value.includes("\0")) throw new InvalidArgumentError(field, "must not contain NUL characters");
  return value;
}

function encodeCursor(cursor: AuditCursor): string {
  return Buffer.from(JSON.stringify([cursor.timestamp.toISOString(), cursor.id])).toString("base64url");
}

function decodeCursor(token: string): AuditCursor | undefined {
  if (token === "") return undefined;
  try {
    const [timestamp, id] = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as unknown[];
    const date = new Date(String(timestamp));
    if (typeof timestamp === "string" && typeof id === "string" && !Number.isNaN(date.getTime())) {
      return { timestamp: date, id: parseUuid(id, "page_token") };
    }
  } catch {
    // Falls through to the error below: the token was not made by us.
  }
  throw new InvalidArgumentError("page_token", "is not a token from this listing");
}

/** The reads: checks, profiles, roles and permissions, answered through the reader. */
export class AuthzQueries {
  protected readonly reader: Reader;
  readonly maxBatch: number;

  constructor(options: AuthzQueriesOptions) {
    this.reader = options.reader;
    this.maxBatch = options.maxBatch;
  }

  async checkPermission(input: CheckInput): Promise<CheckOutput> {
    const query = parseCheck(input, "");
    return this.#decide(query, await this.reader.user(query.userId, query.consistency));
  }

  /**
   * checkPermission without waiting, when the reader can answer from memory right now; undefined when it
   * cannot (then call checkPermission). Throws as checkPermission rejects.
   */
  checkPermissionNow(input: CheckInput): CheckOutput | undefined {
    const query = parseCheck(input, "");
    const view = this.reader.userNow?.(query.userId, query.consistency);
    return view === undefined ? undefined : this.#decide(query, view);
  }

  /** Validates every check before running any, so a bad batch fails as a whole. */
  async checkPermissions(checks: CheckInput[]): Promise<CheckOutput[]> {
    if (checks.length > this.maxBatch) {
      throw new InvalidArgumentError(
        "checks",
        `at most ${this.maxBatch} checks per call (got ${checks.length})`,
      );
    }
    const queries = checks.map((check, i) => parseCheck(check, `checks[${i}].`));
    return Promise.all(
      queries.map(async (query) =>
        this.#decide(query, await this.reader.user(query.userId, query.consistency)),
      ),
    );
  }

  /** The answer to a check, from the user's roles as read (synchronous: the hot path awaits only the read). */
  #decide({ permissionRef, consistency, prefix }: CheckQuery, view: UserView): CheckOutput {
    assertWritten(consistency, view.revision, `${prefix}at_least_as_fresh`);
    const permission = view.index.resolvePermission(permissionRef);
    if (!permission) throw new NotFoundError(`${prefix}permission: no permission ${quote(permissionRef)}`);
    const grantedBy = view.index.grantedBy(view.roles, permission.id);
    return { allowed: grantedBy.length > 0, grantedBy, checkedAt: formatRevision(view.revision) };
  }

  /** Whether the user holds the permission: how callers' own rights are decided. */
  async holds(userId: string, permissionName: string, consistency: Consistency = CACHED): Promise<boolean> {
    return holdsIn(await this.reader.user(userId, consistency), permissionName);
  }

  /** holds (from the cache) without waiting, when the reader can answer from memory now; else undefined. */
  holdsNow(userId: string, permissionName: string): boolean | undefined {
    const view = this.reader.userNow?.(userId, CACHED);
    return view === undefined ? undefined : holdsIn(view, permissionName);
  }

  /** Name, organisation, roles and effective permissions, with the revision they reflect (read_at). */
  async getProfile(userIdInput: string, atLeastAsFresh = ""): Promise<ProfileOutput> {
    const userId = parseUuid(userIdInput, "user_id");
    const consistency = freshness(atLeastAsFresh, "at_least_as_fresh");
    const [{ profile, revision: profileRevision }, view] = await Promise.all([
      this.reader.profile(userId, consistency),
      this.reader.user(userId, consistency),
    ]);
    const revision = Math.min(profileRevision, view.revision);
    assertWritten(consistency, revision, "at_least_as_fresh");
    if (!profile && view.roles.length === 0) throw new NotFoundError(`user_id: no user ${userId}`);
    return {
      profile: profileOf(userId, profile, view.roles, view.index.effectivePermissions(view.roles)),
      revision: formatRevision(revision),
    };
  }

  async listRoles(atLeastAsFresh = ""): Promise<{ roles: RoleOutput[]; readAt: string }> {
    const { index, revision } = await this.#catalog(atLeastAsFresh);
    const roles = index.roles.map((role) => ({
      id: role.id,
      name: role.name,
      description: role.description,
      permissions: role.permissionNames,
    }));
    return { roles, readAt: revision };
  }

  async listPermissions(atLeastAsFresh = ""): Promise<{ permissions: PermissionRecord[]; readAt: string }> {
    const { index, revision } = await this.#catalog(atLeastAsFresh);
    return { permissions: index.permissions, readAt: revision };
  }

  async #catalog(atLeastAsFresh: string): Promise<{ index: RoleIndex; revision: string }> {
    const consistency = freshness(atLeastAsFresh, "at_least_as_fresh");
    const view = await this.reader.catalog(consistency);
    assertWritten(consistency, view.revision, "at_least_as_fresh");
    return { index: view.index, revision: formatRevision(view.revision) };
  }
}

/** AuthzQueries plus what needs the store: role and profile writes, the audit log, the change log. */
export class Authz extends AuthzQueries {
  readonly #store: Store;
  readonly #hub: ChangeHub;

  constructor(options: AuthzOptions) {
    super(options);
    this.#store = options.store;
    this.#hub = options.hub;
  }

  async assignRole(userIdInput: string, roleRef: string, actorId: string): Promise<RolesOutput> {
    const userId = parseUuid(userIdInput, "user_id");
    const role = await this.#resolveRole(required(roleRef, "role"), "role");
    return this.#afterRoleWrite(userId, await this.#store.assignRole(userId, role.id, actorId));
  }

  async revokeRole(userIdInput: string, roleRef: string, actorId: string): Promise<RolesOutput> {
    const userId = parseUuid(userIdInput, "user_id");
    const role = await this.#resolveRole(required(roleRef, "role"), "role");
    return this.#afterRoleWrite(userId, await this.#store.revokeRole(userId, role.id, actorId));
  }

  async setUserRoles(userIdInput: string, roleRefs: string[], actorId: string): Promise<RolesOutput> {
    const userId = parseUuid(userIdInput, "user_id");
    // A malformed request is INVALID_ARGUMENT whatever it refers to: check every entry before any lookup.
    for (const [i, ref] of roleRefs.entries()) required(ref, `roles[${i}]`);
    const roleIds: string[] = [];
    for (const [i, ref] of roleRefs.entries()) {
      const role = await this.#resolveRole(ref, `roles[${i}]`);
      if (!roleIds.includes(role.id)) roleIds.push(role.id);
    }
    return this.#afterRoleWrite(userId, await this.#store.setUserRoles(userId, roleIds, actorId));
  }

  /** Upserts the profile; `revision` is written_at. */
  async updateProfile(
    userIdInput: string,
    patch: { name?: string | undefined; organisation?: string | undefined },
    actorId: string,
  ): Promise<ProfileOutput> {
    const userId = parseUuid(userIdInput, "user_id");
    const name = text(patch.name, "name");
    const organisation = text(patch.organisation, "organisation");
    if (name === undefined && organisation === undefined) {
      throw new InvalidArgumentError("name", "name or organisation is required");
    }
    const result = await this.#store.updateProfile(
      userId,
      { ...(name !== undefined && { name }), ...(organisation !== undefined && { organisation }) },
      actorId,
    );
    if (result.changed) this.reader.invalidateUser(userId);
    const view = await this.reader.user(userId, CACHED);
    return {
      profile: profileOf(userId, result.profile, view.roles, view.index.effectivePermissions(view.roles)),
      revision: formatRevision(result.revision),
    };
  }

  async listAuditEvents(input: {
    userId: string;
    pageSize: number;
    pageToken: string;
  }): Promise<AuditPageOutput> {
    const userId = input.userId === "" ? undefined : parseUuid(input.userId, "user_id");
    if (input.pageSize < 0 || input.pageSize > MAX_PAGE_SIZE) {
      throw new InvalidArgumentError(
        "page_size",
        `must be between 1 and ${MAX_PAGE_SIZE} (0 means ${DEFAULT_PAGE_SIZE})`,
      );
    }
    const before = decodeCursor(input.pageToken);
    const page = await this.#store.listAudit({
      limit: input.pageSize === 0 ? DEFAULT_PAGE_SIZE : input.pageSize,
      ...(userId !== undefined && { userId }),
      ...(before !== undefined && { before }),
    });
    return { events: page.events, nextPageToken: page.next ? encodeCursor(page.next) : "" };
  }

  /**
   * Changes after `after` (or from now), then live ones, each once and in order, until `signal` aborts.
   * A revision older than the change log keeps is InvalidArgumentError: the caller must reload and watch anew.
   */
  async *watchChanges(afterInput: string, signal: AbortSignal): AsyncGenerator<ChangeOutput> {
    const requested = parseRevision(afterInput, "after");
    let buffer: Change[] = [];
    let overflow = false;
    let wake: (() => void) | undefined;
    const notify = () => {
      wake?.();
      wake = undefined;
    };
    const detach = this.#hub.addListener({
      onChanges: (changes) => {
        if (overflow) return;
        buffer.push(...changes);
        if (buffer.length > WATCH_BUFFER_LIMIT) {
          overflow = true;
          buffer = [];
        }
        notify();
      },
      onInterrupted: () => {},
      // Changes missed while the feed was down are replayed by it; re-reading the log covers the rest.
      onResumed: () => {
        overflow = true;
        notify();
      },
    });
    signal.addEventListener("abort", notify);
    try {
      let cursor = requested ?? (await this.#store.currentRevision());
      // Checked after the first read of the log, not before: pruning removes a prefix, so if the oldest
      // entry left then is at most cursor + 1, that read missed nothing.
      let verified = requested === undefined;
      let catchUp = true;
      while (!signal.aborted) {
        if (catchUp) {
          overflow = false;
          for (;;) {
            const changes = await this.#store.changesAfter(cursor, 500);
            if (!verified) {
              const oldest = await this.#store.oldestRevision();
              if (oldest > 0 && cursor < oldest - 1) {
                // API.md's status table has no OUT_OF_RANGE: a revision the log no longer reaches is a bad revision.
                throw new InvalidArgumentError(
                  "after",
                  `revision ${cursor} is older than the change log keeps (oldest is ${oldest}); reload and watch from now`,
                );
              }
              verified = true;
            }
            for (const change of changes) {
              if (signal.aborted) return;
              cursor = change.revision;
              yield {
                revision: formatRevision(change.revision),
                kind: change.kind,
                userId: change.userId ?? "",
              };
            }
            if (changes.length < 500) break;
          }
          catchUp = false;
        }
        const pending = buffer;
        buffer = [];
        for (const change of pending) {
          if (change.revision <= cursor) continue;
          if (signal.aborted) return;
          cursor = change.revision;
          yield { revision: formatRevision(change.revision), kind: change.kind, userId: change.userId ?? "" };
        }
        if (overflow) {
          catchUp = true;
          continue;
        }
        if (buffer.length === 0 && !signal.aborted) await new Promise<void>((resolve) => (wake = resolve));
      }
    } finally {
      detach();
      signal.removeEventListener("abort", notify);
    }
  }

  async #resolveRole(ref: string, field: string): Promise<RoleName> {
    // The cached map first; the database knows roles created since it was loaded.
    const { index } = await this.reader.catalog(CACHED);
    const cached = index.resolveRole(ref);
    if (cached) return cached;
    const stored = await this.#store.resolveRole(ref);
    if (!stored) throw new NotFoundError(`${field}: no role ${quote(ref)}`);
    return stored;
  }

  #afterRoleWrite(userId: string, result: RoleWriteResult): RolesOutput {
    if (result.changed) this.reader.invalidateUser(userId);
    return {
      changed: result.changed,
      roles: result.roles.map((role) => role.name),
      writtenAt: formatRevision(result.revision),
    };
  }
}

function profileOf(
  userId: string,
  record: ProfileRecord | null,
  roles: IndexedRole[],
  permissions: string[],
): Profile {
  const profile: Profile = {
    userId,
    name: record?.name ?? "",
    organisation: record?.organisation ?? "",
    roles: roles.map((role) => role.name),
    permissions,
  };
  if (record) {
    profile.createdAt = record.createdAt;
    profile.updatedAt = record.updatedAt;
  }
  return profile;
}
