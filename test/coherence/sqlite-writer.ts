// FLIP's Python API on a SQLite file, from ANOTHER process: two SQLite libraries in one process would
// share (and drop) each other's POSIX file locks. Runs statements in one transaction with node:sqlite on
// the test's own Node and reports when the commit returned.

import { spawn } from "node:child_process";

const SCRIPT = `
const { DatabaseSync } = require("node:sqlite");
const [path, json] = process.argv.slice(1);
const db = new DatabaseSync(path);
db.exec("PRAGMA busy_timeout = 5000");
db.exec("BEGIN IMMEDIATE");
for (const [sql, params] of JSON.parse(json)) db.prepare(sql).run(...params);
db.exec("COMMIT");
const committedAt = Date.now();
db.close();
process.stdout.write(JSON.stringify({ committedAt }));
`;

export type Statement = [sql: string, params: (string | number | null)[]];

/** Runs `statements` in one transaction in a child process; resolves to the commit time (epoch ms). */
export function writeFromAnotherProcess(path: string, statements: Statement[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--no-warnings", "-e", SCRIPT, path, JSON.stringify(statements)], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("close", (code) => {
      if (code !== 0) return reject(new Error(`SQLite writer exited ${code}: ${stderr}`));
      resolve((JSON.parse(stdout) as { committedAt: number }).committedAt);
    });
  });
}
