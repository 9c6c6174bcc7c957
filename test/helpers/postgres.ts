// PostgreSQL for tests: a fresh database per test file, created and dropped here. When no server answers
// at TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres) the PostgreSQL suites are
// skipped and say so, unless AUTHZ_TEST_REQUIRE_POSTGRES=true (CI), where that is a failure.

import { randomBytes } from "node:crypto";
import pg from "pg";

export const ADMIN_URL = process.env.TEST_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const REQUIRED = process.env.AUTHZ_TEST_REQUIRE_POSTGRES === "true";

async function probe(): Promise<string | null> {
  const client = new pg.Client({ connectionString: ADMIN_URL, connectionTimeoutMillis: 3000 });
  client.on("error", () => {});
  try {
    await client.connect();
    await client.query("select 1");
    return null;
  } catch (error) {
    return (error as Error).message;
  } finally {
    await client.end().catch(() => {});
  }
}

const unreachable = await probe();
if (unreachable !== null) {
  if (REQUIRED) {
    throw new Error(
      `PostgreSQL is required (AUTHZ_TEST_REQUIRE_POSTGRES=true) but unreachable: ${unreachable}`,
    );
  }
  console.warn(`PostgreSQL suites SKIPPED: no server at ${ADMIN_URL} (${unreachable})`);
}

/** True when the PostgreSQL suites can run; use with describe.skipIf(!postgresAvailable). */
export const postgresAvailable = unreachable === null;

function urlFor(database: string): string {
  const url = new URL(ADMIN_URL);
  url.pathname = `/${database}`;
  return url.toString();
}

async function admin<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: ADMIN_URL });
  client.on("error", () => {});
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

export interface TestDatabase {
  url: string;
  name: string;
  drop(): Promise<void>;
}

/** Creates an empty database with a unique name; drop() removes it, ending its connections first. */
export async function createTestDatabase(prefix = "authz_test"): Promise<TestDatabase> {
  const name = `${prefix}_${Date.now().toString(36)}_${randomBytes(4).toString("hex")}`;
  await admin((client) => client.query(`CREATE DATABASE "${name}"`));
  return {
    name,
    url: urlFor(name),
    drop: () =>
      admin((client) => client.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)).then(() => {}),
  };
}
