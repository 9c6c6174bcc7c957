// Loaded with --import by test/tracing/otlp.test.ts: writes `module-loaded <url>` on stderr for every
// @opentelemetry module the process loads (import or require), so a test can tell whether any was.

import { registerHooks } from "node:module";

registerHooks({
  load(url, context, nextLoad) {
    if (url.includes("/@opentelemetry/")) process.stderr.write(`module-loaded ${url}\n`);
    return nextLoad(url, context);
  },
});
