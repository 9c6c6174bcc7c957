// The end-to-end suite on PostgreSQL (a fresh database per file).

import { describe } from "vitest";
import { createPostgresDatabase } from "../helpers/app.ts";
import { postgresAvailable } from "../helpers/postgres.ts";
import { rpcSuite } from "./suite.ts";

describe.skipIf(!postgresAvailable)("PostgreSQL", () => {
  rpcSuite("PostgreSQL", createPostgresDatabase);
});
