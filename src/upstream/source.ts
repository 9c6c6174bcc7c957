// A follower's source of truth: the same ReadSource and ChangeFeed the database gives the caches, answered
// by an upstream flip-authz. Every fill is a read that says which revision it reflects (read_at), asked at
// least as fresh as what the follower already claims, so a fetch racing a change is never taken as newer
// than it is. Failures become UnavailableError for callers and one log line for operators.

import type { DescMessage, DescMethodUnary, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import {
  AuthzService,
  type GetProfileResponse,
  type Permission,
  type Role,
} from "../../gen/flip/authz/v1/authz_pb.ts";
import { AuthzError, UnavailableError } from "../authz/errors.ts";
import { NIL_UUID } from "../authz/ids.ts";
import { formatRevision } from "../authz/revision.ts";
import type {
  Catalog,
  ChangeFeed,
  ChangeListener,
  ChangeSubscription,
  Consistency,
  ProfileRead,
  ProfileRecord,
  ReadSource,
  Revision,
  UserRoles,
} from "../authz/store.ts";
import { MalformedAnswerError, revisionFrom, uuidFrom } from "./answers.ts";
import { describeUpstreamError, statusOf, type UpstreamClient } from "./client.ts";
import { UpstreamFeed } from "./feed.ts";
import type { ProblemLog, UpstreamLogger } from "./problems.ts";

const m = AuthzService.method;

/** How long one fill may wait for the upstream before the read fails UNAVAILABLE. */
const FILL_TIMEOUT_MS = 5000;
/** How long a read that met a dropped connection waits before its one retry. */
const RETRY_DELAY_MS = 150;

/** ListRoles and ListPermissions are read until both answer the same revision, at most this often. */
const CATALOG_ATTEMPTS = 10;
/** A user's role names are matched against a catalog of the same moment, re-reading at most this often. */
const MAPPING_ATTEMPTS = 4;

/** A catalog with the lookups a user's role names need. */
interface LoadedCatalog extends Catalog {
  roleIdsByName: Map<string, string>;
  permissionNamesByRole: Map<string, string[]>;
}

/**
 * Builds the catalog from one ListRoles and one ListPermissions answer of the same revision. Roles name
 * their permissions (the contract gives no ids there): a name maps to every permission of that name.
 */
function buildCatalog(roles: Role[], permissions: Permission[], revision: Revision): LoadedCatalog {
  const records = permissions.map((p, i) => ({
    id: uuidFrom(p.id, `permissions[${i}].id`),
    name: p.name,
    description: p.description,
  }));
  const idsByName = new Map<string, string[]>();
  for (const record of records)
    idsByName.set(record.name, [...(idsByName.get(record.name) ?? []), record.id]);
  const roleIdsByName = new Map<string, string>();
  const permissionNamesByRole = new Map<string, string[]>();
  const roleRecords = roles.map((role, i) => {
    const id = uuidFrom(role.id, `roles[${i}].id`);
    roleIdsByName.set(role.name, id);
    permissionNamesByRole.set(id, role.permissions);
    const permissionIds = role.permissions.flatMap((name) => {
      const ids = idsByName.get(name);
      if (ids === undefined) {
        throw new MalformedAnswerError(
          `roles[${i}] names permission ${JSON.stringify(name)}, which is not listed`,
        );
      }
      return ids;
    });
    return { id, name: role.name, description: role.description, permissionIds: [...new Set(permissionIds)] };
  });
  return { roles: roleRecords, permissions: records, revision, roleIdsByName, permissionNamesByRole };
}

/** What GetProfile said about a user. */
interface UserRead {
  roleNames: string[];
  permissions: string[];
  profile: ProfileRecord | null;
  revision: Revision;
}

function profileRecord(userId: string, answer: GetProfileResponse): ProfileRecord | null {
  const profile = answer.profile;
  // Timestamps are set exactly when the user has a profile row.
  if (profile?.createdAt === undefined || profile.updatedAt === undefined) return null;
  return {
    userId,
    name: profile.name,
    organisation: profile.organisation,
    createdAt: timestampDate(profile.createdAt),
    updatedAt: timestampDate(profile.updatedAt),
  };
}

const sorted = (names: Iterable<string>) => [...new Set(names)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));

export interface UpstreamSourceOptions {
  logger: UpstreamLogger;
  problems: ProblemLog;
  maxStalenessMs: number;
}

export class UpstreamSource implements ReadSource, ChangeFeed {
  readonly #client: UpstreamClient;
  readonly #logger: UpstreamLogger;
  readonly #problems: ProblemLog;
  readonly #maxStalenessMs: number;
  /** The newest revision any answer or change showed: every read asks at least this much. */
  #seen: Revision = 0;
  /** The newest catalog loaded, for matching users' role names. */
  #catalog: LoadedCatalog | undefined;

  constructor(client: UpstreamClient, options: UpstreamSourceOptions) {
    this.#client = client;
    this.#logger = options.logger;
    this.#problems = options.problems;
    this.#maxStalenessMs = options.maxStalenessMs;
  }

  /** Raises the revision reads ask at least (the feed calls this as it delivers changes). */
  saw(revision: Revision): void {
    if (revision > this.#seen) this.#seen = revision;
  }

  async loadCatalog(consistency: Consistency = { kind: "cached" }): Promise<Catalog> {
    return this.#read("ListRoles/ListPermissions", async () => {
      const requested = consistency.kind === "fresh" ? consistency.atLeast : 0;
      let want = await this.#atLeast(consistency);
      for (let attempt = 0; attempt < CATALOG_ATTEMPTS; attempt++) {
        // Asked together, so the upstream usually answers both from the same map.
        const [roles, permissions] = await Promise.all([
          this.#fresh(requested, want, (atLeast) => this.#ask(m.listRoles, { atLeastAsFresh: atLeast })),
          this.#fresh(requested, want, (atLeast) =>
            this.#ask(m.listPermissions, { atLeastAsFresh: atLeast }),
          ),
        ]);
        const rolesAt = revisionFrom(roles.readAt, "ListRoles read_at");
        const permissionsAt = revisionFrom(permissions.readAt, "ListPermissions read_at");
        this.saw(Math.max(rolesAt, permissionsAt));
        // Equal read_at means the same catalog (a map loaded at revision R is the catalog as of R).
        if (rolesAt === permissionsAt) {
          const catalog = buildCatalog(roles.roles, permissions.permissions, rolesAt);
          if (this.#catalog === undefined || catalog.revision >= this.#catalog.revision)
            this.#catalog = catalog;
          return catalog;
        }
        want = Math.max(rolesAt, permissionsAt);
      }
      throw new UnavailableError("the upstream's roles and permissions kept changing while read; retry");
    });
  }

  async userRoles(userId: string, consistency: Consistency = { kind: "cached" }): Promise<UserRoles> {
    return this.#read("GetProfile", async () => {
      let user = await this.#readUser(userId, consistency);
      for (let attempt = 0; attempt < MAPPING_ATTEMPTS; attempt++) {
        const catalog = this.#catalog ?? (await this.#loadAtLeast(user.revision));
        const roleIds = this.#match(catalog, user);
        if (roleIds !== undefined) return { roleIds, revision: user.revision };
        // Role names read at one revision and a catalog of another disagree (a role renamed between):
        // read the older of the two again, at the newer one's revision.
        if (catalog.revision < user.revision) await this.#loadAtLeast(user.revision);
        else user = await this.#readUser(userId, { kind: "fresh", atLeast: catalog.revision });
      }
      throw new UnavailableError("the upstream's roles kept changing while read; retry");
    });
  }

  async getProfile(userId: string, consistency: Consistency = { kind: "cached" }): Promise<ProfileRead> {
    return this.#read("GetProfile", async () => {
      const user = await this.#readUser(userId, consistency);
      return { profile: user.profile, revision: user.revision };
    });
  }

  /** The upstream's revision now (what it has applied). */
  async currentRevision(): Promise<Revision> {
    return this.#read("ListPermissions", async () => {
      const answer = await this.#ask(m.listPermissions, { atLeastAsFresh: "" });
      const revision = revisionFrom(answer.readAt, "ListPermissions read_at");
      this.saw(revision);
      return revision;
    });
  }

  async subscribe(after: Revision, listener: ChangeListener): Promise<ChangeSubscription> {
    const feed = new UpstreamFeed(this.#client, after, listener, {
      logger: this.#logger,
      problems: this.#problems,
      maxStalenessMs: this.#maxStalenessMs,
      currentRevision: () => this.currentRevision(),
      onDelivered: (revision) => this.saw(revision),
    });
    feed.start();
    return feed;
  }

  /** The user's role ids, if the catalog agrees with the read (same names, same effective permissions). */
  #match(catalog: LoadedCatalog, user: UserRead): string[] | undefined {
    const roleIds: string[] = [];
    const permissions: string[] = [];
    for (const name of user.roleNames) {
      const id = catalog.roleIdsByName.get(name);
      if (id === undefined) return undefined;
      roleIds.push(id);
      permissions.push(...(catalog.permissionNamesByRole.get(id) ?? []));
    }
    const expected = sorted(user.permissions);
    const got = sorted(permissions);
    if (expected.length !== got.length || expected.some((name, i) => name !== got[i])) return undefined;
    return roleIds;
  }

  async #loadAtLeast(revision: Revision): Promise<LoadedCatalog> {
    await this.loadCatalog({ kind: "fresh", atLeast: revision });
    return this.#catalog as LoadedCatalog;
  }

  async #readUser(userId: string, consistency: Consistency): Promise<UserRead> {
    const requested = consistency.kind === "fresh" ? consistency.atLeast : 0;
    const want = await this.#atLeast(consistency);
    return this.#fresh(requested, want, async (atLeast) => {
      let answer: GetProfileResponse;
      try {
        answer = await this.#ask(m.getProfile, { userId, atLeastAsFresh: atLeast });
      } catch (error) {
        // A user with neither profile nor roles: no rows, as of at least the revision asked for.
        if (statusOf(error)?.code === grpc.status.NOT_FOUND) {
          return { roleNames: [], permissions: [], profile: null, revision: Number(atLeast) };
        }
        throw error;
      }
      const revision = revisionFrom(answer.readAt, "GetProfile read_at");
      this.saw(revision);
      return {
        roleNames: answer.profile?.roles ?? [],
        permissions: answer.profile?.permissions ?? [],
        profile: profileRecord(userId, answer),
        revision,
      };
    });
  }

  /**
   * Calls `read` at least as fresh as `want`. When the caller's own `requested` revision has not been
   * written (the upstream says so), reads as fresh as known instead, so that the domain sees a read older
   * than asked and says so, naming the caller's field.
   */
  async #fresh<T>(requested: Revision, want: Revision, read: (atLeast: string) => Promise<T>): Promise<T> {
    try {
      return await read(formatRevision(want));
    } catch (error) {
      const status = statusOf(error);
      const unwritten =
        status?.code === grpc.status.INVALID_ARGUMENT && status.details.startsWith("at_least_as_fresh:");
      if (!unwritten || requested <= this.#seen) throw error;
      return read(formatRevision(this.#seen));
    }
  }

  /** The revision a read must reflect at least: never less than already seen. */
  async #atLeast(consistency: Consistency): Promise<Revision> {
    switch (consistency.kind) {
      case "cached":
        return this.#seen;
      case "fresh":
        return Math.max(consistency.atLeast, this.#seen);
      case "full":
        return Math.max(await this.#latest(), this.#seen);
    }
  }

  /**
   * The upstream database's latest revision: a fully consistent check reads the database and answers
   * the revision it saw (checked_at), so reads at least that fresh see everything committed before.
   */
  async #latest(): Promise<Revision> {
    for (let attempt = 0; attempt < 2; attempt++) {
      const catalog = this.#catalog ?? (await this.#loadAtLeast(this.#seen));
      const permission = catalog.permissions[0];
      // No permission to check: the best left is what the upstream has applied.
      if (permission === undefined) return this.currentRevision();
      try {
        const answer = await this.#ask(m.checkPermission, {
          userId: NIL_UUID,
          permission: permission.id,
          fullyConsistent: true,
        });
        return revisionFrom(answer.checkedAt, "CheckPermission checked_at");
      } catch (error) {
        // The permission went away since the catalog was loaded: load it again.
        if (statusOf(error)?.code !== grpc.status.NOT_FOUND) throw error;
        await this.#loadAtLeast(this.#seen);
      }
    }
    return this.currentRevision();
  }

  #ask<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    input: MessageInitShape<I>,
  ): Promise<MessageShape<O>> {
    const deadline = Date.now() + FILL_TIMEOUT_MS;
    return this.#client.unary(method, input, { deadline }).catch(async (error: unknown) => {
      // A read caught on a connection that just dropped (a keepalive timeout on a busy machine, a replica
      // behind the Service going away) fails at once; the channel reconnects within ~100 ms: one more try.
      if (statusOf(error)?.code !== grpc.status.UNAVAILABLE || Date.now() + RETRY_DELAY_MS >= deadline)
        throw error;
      await new Promise((resolve) => setTimeout(resolve, RETRY_DELAY_MS));
      return this.#client.unary(method, input, { deadline });
    });
  }

  /** Runs a read; any failure leaves as UnavailableError (the cause is logged, not sent to callers). */
  async #read<T>(what: string, read: () => Promise<T>): Promise<T> {
    try {
      return await read();
    } catch (error) {
      if (error instanceof AuthzError) throw error;
      const problem =
        error instanceof MalformedAnswerError
          ? `the upstream at ${this.#client.target} sent a malformed answer to ${what}: ${error.message}`
          : describeUpstreamError(error, this.#client.target);
      this.#problems.report(problem);
      const code = statusOf(error)?.code;
      const why = code === undefined ? "a malformed answer" : (grpc.status[code] ?? `code ${code}`);
      throw new UnavailableError(`the upstream flip-authz cannot answer (${why}); retry`);
    }
  }
}
