// A real headless Chromium (Debian's, found by requireTool("chromium"); playwright-core never downloads a
// browser) in a new empty profile, with a log of every request the pages make, every response's headers
// and every console error or uncaught exception, so tests can assert what left the browser and what the
// browser refused. Screenshots go to test-results/console/ (git-ignored) for a person to look at.

import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type BrowserContext, chromium, type Page } from "playwright-core";

export const SCREENSHOT_DIR = join(import.meta.dirname, "..", "..", "test-results", "console");

/** Flags for a quiet, reproducible browser: no sandbox (root in CI), no GPU, no calls home. */
const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export interface SeenResponse {
  url: string;
  status: number;
  headers: Record<string, string>;
}

export interface Browser {
  context: BrowserContext;
  /** A new tab (its own sessionStorage), watched like every other. */
  newPage(): Promise<Page>;
  /** Every request any tab made, in order. */
  readonly requests: { url: string; method: string }[];
  readonly responses: SeenResponse[];
  /** Console errors, uncaught exceptions and CSP violations, as text. */
  readonly errors: string[];
  /** Saves a full-page screenshot as test-results/console/<name>.png. */
  screenshot(page: Page, name: string): Promise<void>;
  close(): Promise<void>;
}

export async function launchBrowser(executablePath: string): Promise<Browser> {
  const profile = mkdtempSync(join(tmpdir(), "flip-authz-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: ARGS,
    viewport: { width: 1280, height: 800 },
    locale: "en-GB",
    timezoneId: "UTC",
  });
  const requests: Browser["requests"] = [];
  const responses: SeenResponse[] = [];
  const errors: string[] = [];
  context.on("request", (request) => requests.push({ url: request.url(), method: request.method() }));
  context.on("response", (response) =>
    responses.push({ url: response.url(), status: response.status(), headers: response.headers() }),
  );
  const watch = (page: Page) => {
    page.on("console", (message) => {
      if (message.type() === "error") errors.push(`console: ${message.text()}`);
    });
    page.on("pageerror", (error) => errors.push(`uncaught: ${error.message}`));
  };
  for (const page of context.pages()) watch(page);
  context.on("page", watch);
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  return {
    context,
    async newPage() {
      const page = await context.newPage();
      // Shorter than the test's own timeout, so a wait that fails says which element it waited for.
      page.setDefaultTimeout(10_000);
      return page;
    },
    requests,
    responses,
    errors,
    async screenshot(page, name) {
      await page.screenshot({ path: join(SCREENSHOT_DIR, `${name}.png`), fullPage: true });
    },
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
