// The statements of the store's writes on PostgreSQL after the user's lock (sql-store.ts's WriteContext),
// each one round trip, typed by the entity definitions and built once (reused-statement.ts). They are
// data-modifying WITH queries, which MikroORM's QueryBuilder does not build, so they go through
// em.getKysely(). Each final SELECT sees the tables as they were before the statement (one snapshot):
// what it reports after the change is derived from that and from what the WITH queries returned. SQLite
// keeps the step-by-step writes (no data-modifying WITH there; its round trips are in-process).

import type { InferKyselyDB } from "@mikro-orm/sql";
import { type Compilable, expressionBuilder } from "kysely";
import type { RevisionCounter, Role, UserAudit, UserProfile, UserRole } from "./entities.ts";
import { ReusedStatement } from "./reused-statement.ts";

type WriteDb = InferKyselyDB<
  typeof UserRole | typeof UserAudit | typeof Role | typeof RevisionCounter | typeof UserProfile
>;

/** The users_audit columns auditRow fills, in its order. */
const AUDIT_COLUMNS = ["id", "action", "user_id", "modified_by_user_id", "timestamp"] as const;

/** One users_audit row from the statement's values `auditId`, `user`, `actor`, `now`, with this action. */
function auditRow(value: (name: "auditId" | "user" | "actor" | "now") => string, action: string) {
  const eb = expressionBuilder<WriteDb>();
  return [
    eb.cast<string>(eb.val(value("auditId")), "uuid").as("id"),
    eb.val(action).as("action"),
    eb.cast<string>(eb.val(value("user")), "uuid").as("user_id"),
    eb.cast<string>(eb.val(value("actor")), "uuid").as("modified_by_user_id"),
    eb.cast<Date>(eb.val(value("now")), "timestamptz").as("timestamp"),
  ] as const;
}

/** The values every writing statement takes for its audit row. */
export interface AuditValues {
  user: string;
  auditId: string;
  actor: string;
  /** ISO 8601, the audit row's timestamp (and the profile's). */
  now: string;
}

export interface LockedRoleRow {
  id: string;
  name: string;
  txid: string;
}

/**
 * The per-user advisory lock and the request for revisions at COMMIT (authz_defer_revisions, the 20261202
 * migration), as columns of the role's row: no row when the role does not exist (and then no lock).
 */
export const LOCK_USER_AND_ROLE = new ReusedStatement<WriteDb, "user" | "role", LockedRoleRow>(
  (kysely, value) =>
    kysely
      .selectFrom("roles as r")
      .select((eb) => [
        "r.id",
        "r.name",
        eb
          .fn("pg_advisory_xact_lock", [eb.val(17221), eb.fn("hashtext", [eb.val(value("user"))])])
          .as("locked"),
        eb.fn("authz_defer_revisions").as("txid"),
      ])
      .where("r.id", "=", value("role")),
);

export interface HeldRoleRow {
  /** true: a wanted role that exists; false: a role the user holds. */
  known: boolean;
  id: string;
  name: string;
}

/** SetUserRoles' read: the wanted roles that exist (array `wanted`) and the roles `user` holds. */
export const ROLES_WANTED_AND_HELD = new ReusedStatement<WriteDb, "user" | "wanted", HeldRoleRow>(
  (kysely, value) =>
    kysely
      .selectFrom("roles as r")
      .select((eb) => [eb.lit(true).$castTo<boolean>().as("known"), "r.id", "r.name"])
      .where((eb) => eb("r.id", "=", eb.fn.any(eb.val(value("wanted") as unknown as string[]))))
      .unionAll((eb) =>
        eb
          .selectFrom("user_role as ur")
          .innerJoin("roles as hr", "hr.id", "ur.role_id")
          .select((inner) => [inner.lit(false).$castTo<boolean>().as("known"), "hr.id", "hr.name"])
          .where("ur.user_id", "=", value("user")),
      ) as unknown as Compilable<HeldRoleRow>,
);

export interface RoleChangeRow {
  changed: boolean;
  /**
   * The change-log entries the statement pends: one per pair removed or added (the statement triggers of
   * the first migration log each row), the same on every row.
   */
  entries: unknown;
  /** null on the one row of a user left with no roles. */
  id: string | null;
  name: string | null;
}

/**
 * AssignRole, RevokeRole and SetUserRoles: removes the user's pairs with the roles in `remove` and adds
 * those in `add` (arrays; either may be empty), writes the audit row (`action`) when a pair changed, and
 * reads the user's roles after: held before, minus removed, plus added. The row is the counter's,
 * left-joined with those roles, so there is always one to carry `changed` and `entries`.
 */
export const CHANGE_ROLES = new ReusedStatement<
  WriteDb,
  keyof AuditValues | "remove" | "add" | "action",
  RoleChangeRow
>((kysely, value) => {
  const user = value("user");
  return kysely
    .with("removed", (db) =>
      db
        .deleteFrom("user_role")
        .where("user_id", "=", user)
        .where((eb) => eb("role_id", "=", eb.fn.any(eb.val(value("remove") as unknown as string[]))))
        .returning("role_id"),
    )
    .with("added", (db) =>
      db
        .insertInto("user_role")
        .columns(["user_id", "role_id"])
        .expression((eb) =>
          eb
            .selectFrom("roles as r")
            .select([eb.cast<string>(eb.val(user), "uuid").as("user_id"), "r.id as role_id"])
            .where((w) => w("r.id", "=", w.fn.any(w.val(value("add") as unknown as string[])))),
        )
        .onConflict((conflict) => conflict.doNothing())
        .returning("role_id"),
    )
    .with("audited", (db) =>
      db
        .insertInto("users_audit")
        .columns(AUDIT_COLUMNS)
        .expression(
          db
            .selectNoFrom(auditRow(value, value("action")))
            .where((eb) =>
              eb.or([
                eb.exists(eb.selectFrom("removed").select("role_id")),
                eb.exists(eb.selectFrom("added").select("role_id")),
              ]),
            ),
        ),
    )
    .selectFrom("authz_revision as c")
    .leftJoin(
      (eb) =>
        eb
          .selectFrom("roles as r")
          .select(["r.id", "r.name"])
          .where((w) =>
            w.or([
              w.and([
                w("r.id", "in", w.selectFrom("user_role").select("role_id").where("user_id", "=", user)),
                w.not(w("r.id", "in", w.selectFrom("removed").select("role_id"))),
              ]),
              w("r.id", "in", w.selectFrom("added").select("role_id")),
            ]),
          )
          .as("ur"),
      (join) => join.onTrue(),
    )
    .select((eb) => [
      eb
        .or([
          eb.exists(eb.selectFrom("removed").select("role_id")),
          eb.exists(eb.selectFrom("added").select("role_id")),
        ])
        .as("changed"),
      eb(
        eb.selectFrom("removed").select((count) => count.fn.countAll().as("n")),
        "+",
        eb.selectFrom("added").select((count) => count.fn.countAll().as("n")),
      ).as("entries"),
      "ur.id",
      "ur.name",
    ])
    .where("c.id", "=", 1) as unknown as Compilable<RoleChangeRow>;
});

export interface ProfileRow {
  changed: boolean;
  user_id: string;
  name: string;
  organisation: string;
  created_at: unknown;
  updated_at: unknown;
}

/**
 * UpdateProfile: the profile upserted with the fields given (a NULL `name` or `organisation` keeps the
 * stored one; a new row gets ''), updated only when a field differs, its audit row when it was written,
 * and the row after: the one written, or else the one that was there.
 */
export const WRITE_PROFILE = new ReusedStatement<
  WriteDb,
  keyof AuditValues | "name" | "organisation",
  ProfileRow
>((kysely, value) => {
  const now = value("now");
  const profileColumns = ["user_id", "name", "organisation", "created_at", "updated_at"] as const;
  const eb = expressionBuilder<WriteDb, "user_profile">();
  const given = (field: "name" | "organisation") => eb.cast<string>(eb.val(value(field)), "varchar");
  /** A field as patched: the value given, or else the stored one. */
  const patched = (field: "name" | "organisation") =>
    eb.fn.coalesce(given(field), eb.ref(`user_profile.${field}`));
  return kysely
    .with("before", (db) =>
      db.selectFrom("user_profile").select(profileColumns).where("user_id", "=", value("user")),
    )
    .with("written", (db) =>
      db
        .insertInto("user_profile")
        .values({
          user_id: value("user"),
          name: eb.fn.coalesce(given("name"), eb.val("")),
          organisation: eb.fn.coalesce(given("organisation"), eb.val("")),
          created_at: eb.cast<Date>(eb.val(now), "timestamptz"),
          updated_at: eb.cast<Date>(eb.val(now), "timestamptz"),
        })
        .onConflict((conflict) =>
          conflict
            .column("user_id")
            .doUpdateSet({
              name: patched("name"),
              organisation: patched("organisation"),
              updated_at: eb.cast<Date>(eb.val(now), "timestamptz"),
            })
            // Only a real change is written (and so audited): a field as patched differs from the stored one.
            .where((w) =>
              w.or(
                (["name", "organisation"] as const).map((field) =>
                  w(patched(field), "is distinct from", w.ref(`user_profile.${field}`)),
                ),
              ),
            ),
        )
        .returning(profileColumns),
    )
    .with("audited", (db) =>
      db
        .insertInto("users_audit")
        .columns(AUDIT_COLUMNS)
        .expression(
          db
            .selectNoFrom(auditRow(value, "Updated user profile"))
            .where((eb) => eb.exists(eb.selectFrom("written").select("user_id"))),
        ),
    )
    .selectFrom("written")
    .select((eb) => [eb.lit(true).$castTo<boolean>().as("changed"), ...profileColumns])
    .unionAll((eb) =>
      eb
        .selectFrom("before")
        .select((inner) => [inner.lit(false).$castTo<boolean>().as("changed"), ...profileColumns])
        .where((inner) => inner.not(inner.exists(inner.selectFrom("written").select("user_id")))),
    ) as unknown as Compilable<ProfileRow>;
});
