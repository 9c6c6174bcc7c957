// The end-to-end suite on a SQLite file (a fresh temporary folder per file).

import { createSqliteDatabase } from "../helpers/app.ts";
import { rpcSuite } from "./suite.ts";

rpcSuite("a SQLite file", createSqliteDatabase);
