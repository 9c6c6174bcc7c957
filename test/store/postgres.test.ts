// The store conformance suite on PostgreSQL, in a fresh database for this file.

import { openStore, storeSql } from "../../src/store/index.ts";
import { createTestDatabase, postgresAvailable } from "../helpers/postgres.ts";
import { storeConformance } from "./conformance.ts";

storeConformance(
  "PostgreSQL",
  async () => {
    const db = await createTestDatabase();
    const store = await openStore({ kind: "postgres", url: db.url }, { migrate: true });
    return {
      kind: "postgres",
      store,
      sql: (query, params) => storeSql(store, query, params),
      close: async () => {
        await store.close();
        await db.drop();
      },
    };
  },
  !postgresAvailable,
);
