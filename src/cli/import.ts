// flip-authz import --file users.csv: bulk onboarding. Two passes over the file, both streamed (memory stays
// flat whatever its size): the first validates every line and reports each bad one with its line number
// (the header is line 1), writing nothing if any is bad; the second writes in batches, each one transaction
// (src/store importUsers), idempotent, every change audited with the nil UUID as actor. A progress bar on
// stderr when it is a terminal; a summary line on stdout either way.

import { createReadStream } from "node:fs";
import { createInterface } from "node:readline";
import { NIL_UUID } from "../authz/ids.ts";
import type { Store } from "../authz/store.ts";
import {
  type ImportLine,
  ImportLineError,
  parseHeader,
  parseLine,
  RoleResolver,
} from "../authz/user-import.ts";
import { type Config, redactDatabase } from "../config.ts";
import { importUsers, openStore } from "../store/index.ts";
import { assertDatabase, causeKeeper } from "./database.ts";

/** Lines per transaction: large enough that round trips do not dominate, small enough to hold locks briefly. */
const BATCH = 1000;

/** Every line of the file with its number (1-based); a trailing empty line is not a line. */
async function* numberedLines(file: string): AsyncGenerator<[number, string]> {
  const input = createReadStream(file, { encoding: "utf8" });
  const lines = createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY });
  let number = 0;
  try {
    for await (const line of lines) yield [++number, line];
  } finally {
    lines.close();
    input.destroy();
  }
}

interface Validation {
  columns: number;
  lines: number;
  bad: number;
}

/** Pass 1: every line checked; each bad one reported on stderr as it is found. */
async function validate(
  file: string,
  roles: RoleResolver,
  report: (line: string) => void,
): Promise<Validation> {
  let columns = 0;
  let lines = 0;
  let bad = 0;
  for await (const [number, line] of numberedLines(file)) {
    try {
      if (number === 1) {
        columns = parseHeader(line);
        continue;
      }
      if (columns === 0) continue; // the header was bad: nothing else can be read reliably
      if (line.trim() === "") continue;
      parseLine(line, columns, roles);
      lines++;
    } catch (error) {
      if (!(error instanceof ImportLineError)) throw error;
      bad++;
      report(`line ${number}: ${error.message}`);
    }
  }
  if (columns === 0 && bad === 0) {
    bad++;
    report("line 1: the file is empty; the header user_id,role[,name[,organisation]] is required");
  }
  return { columns, lines, bad };
}

class Progress {
  private readonly started = performance.now();
  private shown = 0;
  private readonly tty: boolean;
  private readonly total: number;
  constructor(total: number) {
    this.total = total;
    this.tty = process.stderr.isTTY === true;
  }

  update(done: number): void {
    if (!this.tty) return;
    const now = performance.now();
    if (now - this.shown < 100 && done < this.total) return;
    this.shown = now;
    const width = 30;
    const share = this.total === 0 ? 1 : done / this.total;
    const filled = Math.round(share * width);
    const rate = done / Math.max(0.001, (now - this.started) / 1000);
    process.stderr.write(
      `\r[${"#".repeat(filled)}${" ".repeat(width - filled)}] ${(share * 100).toFixed(0).padStart(3)}% ` +
        `${done.toLocaleString("en-GB")}/${this.total.toLocaleString("en-GB")} lines, ${rate.toFixed(0)}/s `,
    );
  }

  end(): void {
    if (this.tty) process.stderr.write("\n");
  }
}

export async function importCommand(config: Config, file: string): Promise<number> {
  assertDatabase(config);
  const causes = causeKeeper();
  const database = redactDatabase(config.database);
  let store: Store;
  try {
    store = await openStore(config.database, { migrate: config.migrateOnStart, logger: causes.logger });
  } catch (error) {
    throw causes.explain(error, database);
  }
  try {
    const catalog = await store.loadCatalog();
    const roles = new RoleResolver(catalog.roles);
    const started = performance.now();
    const checked = await validate(file, roles, (line) => process.stderr.write(`${file}: ${line}\n`));
    if (checked.bad > 0) {
      process.stdout.write(
        `import refused: ${checked.bad} bad line${checked.bad === 1 ? "" : "s"} in ${file}; nothing written\n`,
      );
      return 1;
    }
    const progress = new Progress(checked.lines);
    let done = 0;
    let assigned = 0;
    let profiles = 0;
    let batch: ImportLine[] = [];
    const flush = async () => {
      const result = await importUsers(store, batch, NIL_UUID);
      assigned += result.assigned;
      profiles += result.profiles;
      done += batch.length;
      batch = [];
      progress.update(done);
    };
    for await (const [number, line] of numberedLines(file)) {
      if (number === 1 || line.trim() === "") continue;
      try {
        batch.push(parseLine(line, checked.columns, roles));
      } catch (error) {
        if (!(error instanceof ImportLineError)) throw error;
        // Only if the file changed since it was checked.
        throw new Error(`${file}: line ${number}: ${error.message} (the file changed during the import)`);
      }
      if (batch.length >= BATCH) await flush();
    }
    if (batch.length > 0) await flush();
    progress.end();
    const seconds = (performance.now() - started) / 1000;
    process.stdout.write(
      `imported ${done.toLocaleString("en-GB")} lines from ${file} into ${database}: ` +
        `${assigned.toLocaleString("en-GB")} roles assigned, ${profiles.toLocaleString("en-GB")} profiles written, ` +
        `the rest already as asked; ${seconds.toFixed(1)} s, ${(done / Math.max(seconds, 0.001)).toFixed(0)} lines/s\n`,
    );
    return 0;
  } catch (error) {
    throw causes.explain(error, database);
  } finally {
    await store.close();
  }
}
