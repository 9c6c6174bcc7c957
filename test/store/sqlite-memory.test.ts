// The store conformance suite on an in-memory SQLite database.

import { openStore, storeSql } from "../../src/store/index.ts";
import { storeConformance } from "./conformance.ts";

storeConformance("SQLite :memory:", async () => {
  const store = await openStore({ kind: "sqlite", path: ":memory:" }, { migrate: true });
  return {
    kind: "sqlite",
    store,
    sql: (query, params) => storeSql(store, query, params),
    close: () => store.close(),
  };
});
