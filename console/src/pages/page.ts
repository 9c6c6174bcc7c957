// What every page of the console gets and offers.

import type { AuthzClient } from "../api.ts";
import type { Catalog } from "../catalog.ts";

export interface Context {
  client: AuthzClient;
  catalog: Catalog;
}

export interface Page {
  /** Called each time the page is shown: load what it needs (the first time, or again). */
  show(): void;
}
