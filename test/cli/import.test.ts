// flip-authz import, through the real command line, on a SQLite file and on PostgreSQL: a bad file is refused
// whole (each bad line named with its number, the header being line 1) and changes nothing; a good one is
// written with an audit row per change (the nil UUID as actor) and a change-log entry per change; a re-run
// changes and audits nothing.

import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_ROLE_ID } from "../../src/authz/flip.ts";
import { openStore, storeSql } from "../../src/store/index.ts";
import { BIN, runCli } from "../helpers/cli.ts";
import { createTestDatabase, postgresAvailable, type TestDatabase } from "../helpers/postgres.ts";
import { requireTool } from "../helpers/tools.ts";

const script = requireTool("script");

const NIL = "00000000-0000-0000-0000-000000000000";
const VIEWER_ID = "cdee79c9-a5e1-4b9e-a315-1ec2f3d29efe";
const A = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";
const B = "3f2504e0-4f89-41d3-9a0c-0305e82c3302";
const C = "3f2504e0-4f89-41d3-9a0c-0305e82c3303";

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "authz-import-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

function importSuite(kind: string, database: () => string, skip: boolean) {
  describe.skipIf(skip)(`flip-authz import on ${kind}`, () => {
    const env = () => ({ DATABASE_URL: database() });
    const query = async (sql: string, params: unknown[] = []) => {
      const store = await openStore(
        database().startsWith("sqlite:")
          ? { kind: "sqlite", path: database().slice("sqlite:".length) }
          : { kind: "postgres", url: database() },
        { migrate: false },
      );
      try {
        return await storeSql(store, sql, params);
      } finally {
        await store.close();
      }
    };
    const counts = async () => ({
      pairs: (
        await query("SELECT user_id, role_id FROM user_role WHERE role_id <> ? ORDER BY 1, 2", [
          ADMIN_ROLE_ID,
        ])
      ).length,
      audits: Number((await query("SELECT count(*) AS n FROM users_audit"))[0]?.n),
      revision: Number((await query("SELECT revision FROM authz_revision"))[0]?.revision),
    });

    it("migrates first", async () => {
      expect((await runCli(["migrate"], env())).code).toBe(0);
    });

    it("refuses a file with bad lines, naming each with its line number, and writes nothing", async () => {
      const before = await counts();
      const bad = file(
        `bad-${kind}.csv`,
        [
          "user_id,role,name",
          `${A},Viewer,Ada`,
          "not-a-uuid,Viewer,Bob",
          `${B},Nobody,Cy`,
          `${C},Viewer`,
          `${C},Viewer,"unterminated`,
          `${C},Viewer,${"x".repeat(256)}`,
          `${B},Researcher,Dee`,
          "",
        ].join("\n"),
      );
      const result = await runCli(["import", "--file", bad], env());
      expect(result.code).toBe(1);
      expect(result.stderr.trim().split("\n")).toEqual([
        `${bad}: line 3: user_id must be a UUID, found "not-a-uuid"`,
        `${bad}: line 4: role "Nobody" does not exist`,
        `${bad}: line 5: expected 3 fields as in the header, found 2`,
        `${bad}: line 6: a quoted field is not closed`,
        `${bad}: line 7: name must be at most 255 characters`,
      ]);
      expect(result.stdout.trim()).toBe(`import refused: 5 bad lines in ${bad}; nothing written`);
      expect(await counts()).toEqual(before);
    });

    it("refuses a wrong header as line 1", async () => {
      const bad = file(`header-${kind}.csv`, `user,role\n${A},Viewer\n`);
      const result = await runCli(["import", "--file", bad], env());
      expect(result.code).toBe(1);
      expect(result.stderr).toContain(
        `${bad}: line 1: the header must be user_id,role[,name[,organisation]]`,
      );
    });

    it("imports roles by name or UUID and profiles, audited with the nil UUID; a re-run changes nothing", async () => {
      const before = await counts();
      const good = file(
        `good-${kind}.csv`,
        [
          "user_id,role,name,organisation",
          `${A.toUpperCase()},viewer,Ada Lovelace,"Analytical Engines, Ltd"`,
          `${A},Researcher,,`,
          `${B},${VIEWER_ID},"Bob ""B"" Smith",`,
          `${C},VIEWER,,`,
          "",
        ].join("\r\n"),
      );
      const result = await runCli(["import", "--file", good], env());
      expect(result.stderr).toBe("");
      expect(result.code).toBe(0);
      expect(result.stdout).toMatch(/^imported 4 lines from .* 4 roles assigned, 2 profiles written/);
      const after = await counts();
      expect(after.pairs - before.pairs).toBe(4);
      expect(after.audits - before.audits).toBe(6);
      // One change-log entry per change: four pairs, two profiles.
      expect(after.revision - before.revision).toBe(6);
      const log = await query("SELECT revision FROM authz_change_log WHERE revision > ? ORDER BY revision", [
        before.revision,
      ]);
      expect(log.map((row) => Number(row.revision))).toEqual(
        [1, 2, 3, 4, 5, 6].map((i) => before.revision + i),
      );
      const audit = await query(
        "SELECT action, user_id, modified_by_user_id FROM users_audit WHERE user_id IN (?, ?, ?) ORDER BY user_id, action",
        [A, B, C],
      );
      expect(audit).toEqual([
        { action: "Assigned role Researcher", user_id: A, modified_by_user_id: NIL },
        { action: "Assigned role Viewer", user_id: A, modified_by_user_id: NIL },
        { action: "Updated user profile", user_id: A, modified_by_user_id: NIL },
        { action: "Assigned role Viewer", user_id: B, modified_by_user_id: NIL },
        { action: "Updated user profile", user_id: B, modified_by_user_id: NIL },
        { action: "Assigned role Viewer", user_id: C, modified_by_user_id: NIL },
      ]);
      expect(
        await query(
          "SELECT user_id, name, organisation FROM user_profile WHERE user_id IN (?, ?, ?) ORDER BY 1",
          [A, B, C],
        ),
      ).toEqual([
        { user_id: A, name: "Ada Lovelace", organisation: "Analytical Engines, Ltd" },
        { user_id: B, name: 'Bob "B" Smith', organisation: "" },
      ]);

      const again = await runCli(["import", "--file", good], env());
      expect(again.code).toBe(0);
      expect(again.stdout).toMatch(/^imported 4 lines from .* 0 roles assigned, 0 profiles written/);
      expect(await counts()).toEqual(after);
    });

    it("a missing file fails in one line", async () => {
      const result = await runCli(["import", "--file", join(dir, "missing.csv")], env());
      expect(result.code).toBe(1);
      expect(result.stderr.trim().split("\n")).toHaveLength(1);
      expect(result.stderr).toContain("missing.csv");
    });
  });
}

importSuite("SQLite", () => `sqlite:${join(dir, "authz.db")}`, false);

describe.skipIf(!script.available)("flip-authz import on a terminal", () => {
  it("draws a progress bar that ends at 100%, then the summary line", async () => {
    const lines = Array.from(
      { length: 2500 },
      (_, i) => `3f2504e0-4f89-41d3-9a0c-${i.toString(16).padStart(12, "0")},Viewer`,
    );
    const csv = file("tty.csv", `user_id,role\n${lines.join("\n")}\n`);
    // script(1) runs the command on a pseudo-terminal (stdout and stderr both) and copies what it writes.
    const { stdout } = await promisify(execFile)(
      script.path as string,
      ["-qfec", `${process.execPath} ${BIN} import --file ${csv}`, "/dev/null"],
      {
        env: {
          PATH: process.env.PATH ?? "",
          DATABASE_URL: `sqlite:${join(dir, "tty.db")}`,
          AUTHZ_MIGRATE_ON_START: "true",
        },
      },
    );
    expect(stdout).toMatch(/\r\[#{30}\] 100% 2,500\/2,500 lines, \d+\/s \r?\n/);
    expect(stdout).toMatch(/imported 2,500 lines from .*: 2,500 roles assigned, 0 profiles written/);
  }, 60_000);
});

let db: TestDatabase | undefined;
beforeAll(async () => {
  if (postgresAvailable) db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});
importSuite("PostgreSQL", () => db?.url ?? "", !postgresAvailable);
