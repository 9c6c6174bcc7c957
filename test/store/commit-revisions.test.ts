// CommitRevisions (src/store/orm.ts): what the pooled connections' NOTICEs leave for the writers to take.
// The NOTICE itself, sent by PostgreSQL at COMMIT, is tested against a real database in
// postgres-revisions.test.ts; this is the bookkeeping: each revision taken once, other notices ignored,
// and revisions nobody takes (a COMMIT that failed after its NOTICE) kept only up to a bound.

import { describe, expect, it } from "vitest";
import { CommitRevisions } from "../../src/store/orm.ts";

const notice = (detail: string) => ({ message: "authz_commit_revision", detail });

describe("CommitRevisions", () => {
  it("gives each transaction its revision once", () => {
    const commits = new CommitRevisions();
    commits.record(notice("1001:41"));
    commits.record(notice("1002:42"));
    expect(commits.take("1002")).toBe(42);
    expect(commits.take("1001")).toBe(41);
    expect(commits.take("1001")).toBeUndefined();
    expect(commits.take("1003")).toBeUndefined();
  });

  it("ignores other notices and malformed details", () => {
    const commits = new CommitRevisions();
    commits.record({ message: 'relation "x" already exists, skipping', detail: "7:8" });
    commits.record({ message: "authz_commit_revision" });
    commits.record(notice("no colon"));
    commits.record(notice(":5"));
    commits.record(notice("9:not a number"));
    commits.record(notice("10:1.5"));
    expect([commits.take("7"), commits.take("9"), commits.take("10"), commits.take("")]).toEqual([
      undefined,
      undefined,
      undefined,
      undefined,
    ]);
  });

  it("keeps the newest 1,024 revisions nobody took, dropping the oldest first", () => {
    const commits = new CommitRevisions();
    for (let txid = 1; txid <= 1030; txid++) commits.record(notice(`${txid}:${txid * 10}`));
    for (let txid = 1; txid <= 6; txid++) expect(commits.take(String(txid))).toBeUndefined();
    expect(commits.take("7")).toBe(70);
    expect(commits.take("1030")).toBe(10300);
  });
});
