// The store conformance suite on a SQLite file in a fresh temporary folder (created by the store).

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openStore, storeSql } from "../../src/store/index.ts";
import { storeConformance } from "./conformance.ts";

storeConformance("SQLite file", async () => {
  const dir = mkdtempSync(join(tmpdir(), "authz-store-"));
  const store = await openStore({ kind: "sqlite", path: join(dir, "nested", "authz.db") }, { migrate: true });
  return {
    kind: "sqlite",
    store,
    sql: (query, params) => storeSql(store, query, params),
    close: async () => {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
});
