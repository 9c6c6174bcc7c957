import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_ROLE_ID } from "../../src/authz/flip.ts";
import { runCli } from "../helpers/cli.ts";
import { createTestDatabase, postgresAvailable, type TestDatabase } from "../helpers/postgres.ts";

const USER = "3F2504E0-4F89-41D3-9A0C-0305E82C3301";
const user = USER.toLowerCase();

/** One line on stderr, no stack trace, non-zero exit. */
function expectOneLineFailure(result: { code: number | null; stderr: string; stdout: string }, text: string) {
  expect(result.code).not.toBe(0);
  const lines = result.stderr.trim().split("\n");
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^flip-authz: /);
  expect(lines[0]).toContain(text);
  expect(result.stderr).not.toMatch(/\n\s+at /);
}

describe("command line basics", () => {
  it("prints usage and per-command help", async () => {
    const usage = await runCli(["--help"]);
    expect(usage.code).toBe(0);
    for (const command of ["serve", "migrate", "assign-role", "check", "healthcheck"]) {
      expect(usage.stdout).toContain(command);
    }
    const help = await runCli(["assign-role", "--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain("--user");
    expect(help.stdout).toContain("--role");
  });

  it("refuses an unknown command and missing options with exit 2", async () => {
    const unknown = await runCli(["frobnicate"]);
    expectOneLineFailure(unknown, 'unknown command "frobnicate"');
    expect(unknown.code).toBe(2);
    const missing = await runCli(["check", "--user", USER]);
    expectOneLineFailure(missing, "--permission is required");
    expect(missing.code).toBe(2);
    const extra = await runCli(["check", "--user", USER, "--permission", "X", "--bogus", "1"]);
    expectOneLineFailure(extra, "--bogus");
    expect(extra.code).toBe(2);
  });

  it("refuses a malformed DATABASE_URL naming it", async () => {
    const result = await runCli(["migrate"], { DATABASE_URL: "mysql://localhost/flip" });
    expectOneLineFailure(result, "DATABASE_URL: must start with postgres://");
  });

  it("refuses the database commands in a follower's configuration (AUTHZ_UPSTREAM), which has no database", async () => {
    for (const args of [["migrate"], ["check", "--user", USER, "--permission", "CAN_MANAGE_USERS"]]) {
      const result = await runCli(args, { AUTHZ_UPSTREAM: "127.0.0.1:1" });
      expectOneLineFailure(
        result,
        "flip-authz: AUTHZ_UPSTREAM: is set: a follower keeps no database; run this command with the upstream's DATABASE_URL",
      );
      expect(result.code).toBe(1);
    }
  });

  it("reports an unreachable database in one line without its password", async () => {
    const result = await runCli(["check", "--user", USER, "--permission", "CAN_MANAGE_USERS"], {
      DATABASE_URL: "postgres://flip:hunter2secret@127.0.0.1:1/flip",
    });
    expectOneLineFailure(
      result,
      "flip-authz: the database is unavailable (postgres://flip:***@127.0.0.1:1/flip): connect ECONNREFUSED 127.0.0.1:1",
    );
    expect(result.code).toBe(1);
    expect(result.stderr).not.toContain("hunter2secret");
  });
});

describe("command line on SQLite", () => {
  let dir: string;
  let env: Record<string, string>;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "flip-authz-cli-"));
    env = { DATABASE_URL: `sqlite:${join(dir, "nested", "authz.db")}` };
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("with AUTHZ_MIGRATE_ON_START=false, refuses an unmigrated database saying what to run", async () => {
    const result = await runCli(["check", "--user", USER, "--permission", "CAN_MANAGE_USERS"], {
      DATABASE_URL: `sqlite:${join(dir, "unmigrated.db")}`,
      AUTHZ_MIGRATE_ON_START: "false",
    });
    expectOneLineFailure(result, "the database schema is not up to date (");
    expect(result.stderr).toMatch(
      /\(\d+ migrations? pending\): run flip-authz migrate, or set AUTHZ_MIGRATE_ON_START=true$/m,
    );
  });

  it("migrates a new database (creating its folder) and seeds FLIP's roles", async () => {
    const result = await runCli(["migrate"], env);
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    expect(result.stdout).toContain("migrated sqlite:");
    const db = new Database(join(dir, "nested", "authz.db"), { readonly: true });
    try {
      const roles = db.prepare("select name from roles order by name").all() as { name: string }[];
      expect(roles.map((r) => r.name)).toEqual(["Admin", "Researcher", "Viewer"]);
      expect(db.prepare("select count(*) as n from permission").get()).toEqual({ n: 9 });
    } finally {
      db.close();
    }
  });

  it("bootstraps an Admin, audited with the nil UUID, and checks", async () => {
    const denied = await runCli(["check", "--user", USER, "--permission", "can_manage_users"], env);
    expect(denied.code).toBe(0);
    expect(denied.stdout.trim()).toBe("denied");

    const assigned = await runCli(["assign-role", "--user", USER, "--role", "ADMIN"], env);
    expect(assigned.stderr).toBe("");
    expect(assigned.code).toBe(0);
    expect(assigned.stdout.trim()).toBe(`assigned: ${user} now holds Admin`);

    const again = await runCli(["assign-role", "--user", USER, "--role", ADMIN_ROLE_ID], env);
    expect(again).toMatchObject({ code: 0, stderr: "" });
    expect(again.stdout.trim()).toBe(`unchanged (already held): ${user} now holds Admin`);

    const allowed = await runCli(["check", "--user", USER, "--permission", "CAN_MANAGE_USERS"], env);
    expect(allowed).toMatchObject({ code: 0, stderr: "" });
    expect(allowed.stdout.trim()).toBe("allowed (granted by Admin)");

    const db = new Database(join(dir, "nested", "authz.db"), { readonly: true });
    try {
      const audit = db.prepare("select action, user_id, modified_by_user_id from users_audit").all();
      expect(audit).toEqual([
        {
          action: "Assigned role Admin",
          user_id: user,
          modified_by_user_id: "00000000-0000-0000-0000-000000000000",
        },
      ]);
    } finally {
      db.close();
    }
  });

  it("refuses an unknown role, a malformed UUID and an unknown permission, changing nothing", async () => {
    expectOneLineFailure(
      await runCli(["assign-role", "--user", USER, "--role", "Overlord"], env),
      'role: no role "Overlord"',
    );
    expectOneLineFailure(
      await runCli(["assign-role", "--user", "not-a-uuid", "--role", "Admin"], env),
      "user_id: must be a UUID",
    );
    expectOneLineFailure(
      await runCli(["check", "--user", USER, "--permission", "CAN_FLY"], env),
      'permission: no permission "CAN_FLY"',
    );
    const db = new Database(join(dir, "nested", "authz.db"), { readonly: true });
    try {
      expect(db.prepare("select count(*) as n from users_audit").get()).toEqual({ n: 1 });
      expect(db.prepare("select count(*) as n from user_role").get()).toEqual({ n: 1 });
    } finally {
      db.close();
    }
  });
});

describe.skipIf(!postgresAvailable)("command line on PostgreSQL", () => {
  let database: TestDatabase;
  beforeAll(async () => {
    database = await createTestDatabase("authz_cli");
  });
  afterAll(async () => {
    await database?.drop();
  });

  it("migrates, bootstraps an Admin and checks", async () => {
    const env = { DATABASE_URL: database.url };
    const migrated = await runCli(["migrate"], env);
    expect(migrated.stderr).toBe("");
    expect(migrated.code).toBe(0);
    const assigned = await runCli(["assign-role", "--user", USER, "--role", "admin"], env);
    expect(assigned.code).toBe(0);
    expect(assigned.stdout.trim()).toBe(`assigned: ${user} now holds Admin`);
    const allowed = await runCli(
      ["check", "--user", USER, "--permission", "f6dbd04e-d1ef-4cb7-84c2-c29fb35cf83b"],
      env,
    );
    expect(allowed.stdout.trim()).toBe("allowed (granted by Admin)");

    const client = new pg.Client({ connectionString: database.url });
    await client.connect();
    try {
      const rows = await client.query("select user_id::text, role_id::text from user_role");
      expect(rows.rows).toEqual([{ user_id: user, role_id: ADMIN_ROLE_ID }]);
      const audit = await client.query("select action, modified_by_user_id::text as actor from users_audit");
      expect(audit.rows).toEqual([
        { action: "Assigned role Admin", actor: "00000000-0000-0000-0000-000000000000" },
      ]);
    } finally {
      await client.end();
    }
  });
});
