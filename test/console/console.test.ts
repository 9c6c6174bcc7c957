// The web console in a real headless Chromium against the real service (SQLite file, both listeners on
// port 0): every page of CONSOLE.md used as a person would (labels, buttons, the keyboard), in open mode
// and signed in with real signed JWTs (a manager, and a plain user whose writes are refused and shown),
// with what left the browser checked afterwards: only this origin, the CSP and nosniff on every answer,
// and no error in the console. Screenshots of each page go to test-results/console/.

import { randomUUID } from "node:crypto";
import type { Locator, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthzService, type ListAuditEventsResponse } from "../../gen/flip/authz/v1/authz_pb.ts";
import { CLOCK_TOLERANCE_SECONDS } from "../../src/auth/jwt.ts";
import { NIL_UUID } from "../../src/authz/ids.ts";
import { CONSOLE_CSP } from "../../src/server/console.ts";
import { type AppDatabase, createSqliteDatabase, startTestApp, type TestApp } from "../helpers/app.ts";
import { type Browser, launchBrowser } from "../helpers/browser.ts";
import { CLIENT_ID, ISSUER, signAccessToken } from "../helpers/keys.ts";
import { freePort } from "../helpers/ports.ts";
import {
  createConnectClient,
  createGrpcClient,
  createTestPool,
  type ListenerClient,
  type SecureApp,
  startSecureApp,
  type TestPool,
} from "../helpers/secure-app.ts";
import { requireTool } from "../helpers/tools.ts";

const chromium = requireTool("chromium");

const PAGES = ["Check", "Users", "Roles", "Audit", "Changes"] as const;

/** The page region (a section labelled by its heading) called `name`. */
const region = (page: Page, name: string) => page.getByRole("region", { name, exact: true });

/** The visible role="alert" element inside `scope` once it has text; its text. */
async function alertIn(scope: Page | Locator): Promise<string> {
  const alert = scope.getByRole("alert").filter({ hasText: /\S/ });
  await alert.waitFor();
  return (await alert.textContent()) ?? "";
}

async function openConsole(page: Page, base: string): Promise<void> {
  await page.goto(`${base}/console`);
  await page.getByRole("navigation", { name: "Console pages" }).waitFor();
}

async function visit(page: Page, name: (typeof PAGES)[number]): Promise<Locator> {
  await page.getByRole("link", { name, exact: true }).click();
  const shown = region(page, name);
  await shown.waitFor();
  return shown;
}

/** The body rows of `table` as arrays of cell texts (th and td). */
function rowsOf(table: Locator): Promise<string[][]> {
  return table
    .locator("tbody tr")
    .evaluateAll((rows) =>
      rows.map((row) =>
        [...(row as unknown as { cells: { textContent: string }[] }).cells].map((cell) =>
          cell.textContent.trim(),
        ),
      ),
    );
}

/** What the page keeps in web storage and cookies. */
function storageOf(page: Page): Promise<{ session: Record<string, string>; local: number; cookie: string }> {
  return page.evaluate(
    "({ session: Object.fromEntries(Object.entries(sessionStorage)), local: localStorage.length, cookie: document.cookie })",
  );
}

/**
 * What the browser saw over a whole suite: only `base`'s origin, every answer of the console and the API
 * with the CSP (for the console's files) and nosniff, no CSP violation or script error in the console.
 */
function expectCleanTraffic(browser: Browser, base: string) {
  const origin = new URL(base).origin;
  expect(browser.requests.length).toBeGreaterThan(10);
  for (const request of browser.requests) expect(new URL(request.url).origin, request.url).toBe(origin);
  const files = browser.responses.filter((r) => new URL(r.url).pathname.startsWith("/console"));
  const kinds = new Set(
    files.filter((r) => r.status === 200).map((r) => r.headers["content-type"]?.split(";")[0]),
  );
  expect([...kinds].sort()).toEqual(["image/svg+xml", "text/css", "text/html", "text/javascript"]);
  for (const response of files) {
    expect(response.headers["content-security-policy"], response.url).toBe(CONSOLE_CSP);
    expect(response.headers["x-content-type-options"], response.url).toBe("nosniff");
  }
  expect(browser.responses.some((r) => r.url.includes("/flip.authz.v1.AuthzService/"))).toBe(true);
  // Chromium reports each refused call (400, 401, 403, 404) as a failed load; anything else is a defect.
  const unexpected = browser.errors.filter(
    (error) =>
      !/^console: Failed to load resource: the server responded with a status of 40[0134] /.test(error),
  );
  expect(unexpected).toEqual([]);
}

/**
 * Once the Changes page is watching (from the revision the service had reached when it opened), gives
 * `user` a role over gRPC; resolves to that write's revision once the page shows it, by itself.
 */
async function changeShown(page: Page, server: TestApp, user: string): Promise<string> {
  const changes = region(page, "Changes");
  await changes.getByRole("status").filter({ hasText: "Watching for changes" }).waitFor();
  const { writtenAt } = await server.client.call(AuthzService.method.setUserRoles, {
    userId: user,
    roles: ["Viewer"],
  });
  await changes.getByRole("table").getByRole("cell", { name: writtenAt, exact: true }).waitFor();
  return writtenAt;
}

describe.skipIf(!chromium.available)("the console in open mode", () => {
  let db: AppDatabase;
  let server: TestApp;
  let browser: Browser;
  let base: string;
  const admin = randomUUID();
  const researcher = randomUUID();

  beforeAll(async () => {
    db = await createSqliteDatabase();
    server = await startTestApp(db.url);
    base = server.httpBase;
    browser = await launchBrowser(chromium.path as string);
    await server.client.call(AuthzService.method.assignRole, { userId: admin, role: "Admin" });
    await server.client.call(AuthzService.method.updateProfile, {
      userId: admin,
      name: "Ada Admin",
      organisation: "Guy's and St Thomas'",
    });
    await server.client.call(AuthzService.method.assignRole, { userId: researcher, role: "Researcher" });
  });
  afterAll(async () => {
    await browser?.close();
    await server?.close();
    await db?.close();
  });

  it("/console opens the page, says no sign-in is needed, and each link shows its own page alone", async () => {
    const page = await browser.newPage();
    await openConsole(page, base);
    expect(new URL(page.url()).pathname).toBe("/console/");
    await page.getByRole("status").filter({ hasText: "Open mode: no sign-in needed" }).waitFor();
    expect(await page.getByLabel("Access token").isVisible()).toBe(false);
    expect(await page.getByRole("button", { name: "Sign out" }).isVisible()).toBe(false);
    const links = page.getByRole("navigation", { name: "Console pages" }).getByRole("link");
    expect(await links.allTextContents()).toEqual([...PAGES]);
    for (const name of PAGES) {
      await visit(page, name);
      const shown = page.locator("main > section:visible");
      expect(await shown.count()).toBe(1);
      expect(await shown.getByRole("heading", { level: 1 }).textContent()).toBe(name);
      expect(await page.getByRole("link", { name, exact: true }).getAttribute("aria-current")).toBe("page");
    }
    await page.close();
  });

  it("Check: Allowed with the granting roles and the revision, or Denied", async () => {
    const page = await browser.newPage();
    await openConsole(page, base);
    const check = await visit(page, "Check");
    const permissions = check.getByLabel("Permission");
    const listed = await server.client.call(AuthzService.method.listPermissions, {});
    await check.getByRole("option", { name: "CAN_MANAGE_USERS" }).waitFor({ state: "attached" });
    expect(await permissions.locator("option").allTextContents()).toEqual(
      listed.permissions.map((p) => p.name),
    );

    await check.getByLabel("User ID").fill(admin.toUpperCase());
    await permissions.selectOption("CAN_MANAGE_USERS");
    await check.getByRole("button", { name: "Check" }).click();
    const result = check.getByRole("status");
    await result.getByText("Allowed", { exact: true }).waitFor();
    const expected = await server.client.call(AuthzService.method.checkPermission, {
      userId: admin,
      permission: "CAN_MANAGE_USERS",
    });
    expect(await result.locator("p").allTextContents()).toEqual([
      "Allowed",
      "granted by Admin",
      `read at revision ${expected.checkedAt}`,
    ]);
    await browser.screenshot(page, "check");

    await check.getByLabel("User ID").fill(researcher);
    await check.getByRole("button", { name: "Check" }).click();
    await result.getByText("Denied", { exact: true }).waitFor();
    const denied = await result.locator("p").allTextContents();
    expect(denied).toHaveLength(2);
    expect(denied[0]).toBe("Denied");
    expect(denied[1]).toMatch(/^read at revision \d+$/);

    await check.getByLabel("User ID").fill("not-a-uuid");
    await check.getByRole("button", { name: "Check" }).click();
    expect(await alertIn(check)).toBe("[invalid_argument] user_id: must be a UUID");
    expect(await result.isVisible()).toBe(false);
    await page.close();
  });

  it("Check works with the keyboard alone: Tab to each labelled control, arrows to pick, Enter to check", async () => {
    const page = await browser.newPage();
    await openConsole(page, base);
    await region(page, "Check")
      .getByRole("option", { name: "CAN_MANAGE_USERS" })
      .waitFor({ state: "attached" });
    const focused = () =>
      page.evaluate(`(() => {
        const e = document.activeElement;
        return { tag: e.tagName, text: e.textContent.trim(), label: e.labels?.[0]?.textContent ?? null, value: e.value ?? null };
      })()`) as Promise<{ tag: string; text: string; label: string | null; value: string | null }>;

    await page.keyboard.press("Tab");
    expect(await focused()).toMatchObject({ tag: "A", text: "Check" });
    await page.keyboard.press("Enter");
    // The page moves focus on hashchange, an event that may come after the key press returns.
    await page.waitForFunction(`document.activeElement?.tagName === "H1"`);
    expect(await focused()).toMatchObject({ tag: "H1", text: "Check" });
    await page.keyboard.press("Tab");
    expect(await focused()).toMatchObject({ tag: "INPUT", label: "User ID" });
    await page.keyboard.type(admin);
    await page.keyboard.press("Tab");
    expect(await focused()).toMatchObject({ tag: "SELECT", label: "Permission" });
    for (let i = 0; i < 20 && (await focused()).value !== "CAN_MANAGE_USERS"; i++) {
      await page.keyboard.press("ArrowDown");
    }
    expect((await focused()).value).toBe("CAN_MANAGE_USERS");
    await page.keyboard.press("Tab");
    expect(await focused()).toMatchObject({ tag: "BUTTON", text: "Check" });
    await page.keyboard.press("Enter");
    await region(page, "Check").getByRole("status").getByText("Allowed", { exact: true }).waitFor();
    expect(await region(page, "Check").getByRole("status").locator("p").allTextContents()).toContain(
      "granted by Admin",
    );
    await page.close();
  });

  it("Users: looks a user up, saves roles and a profile; an unknown user gets a first role", async () => {
    const page = await browser.newPage();
    await openConsole(page, base);
    const users = await visit(page, "Users");
    await users.getByLabel("User ID").fill(admin);
    await users.getByRole("button", { name: "Look up" }).click();
    await users.getByRole("checkbox", { name: "Admin", exact: true }).waitFor();
    expect(await users.locator("dl > *").allTextContents()).toEqual([
      "Name",
      "Ada Admin",
      "Organisation",
      "Guy's and St Thomas'",
    ]);
    const roles = await server.client.call(AuthzService.method.listRoles, {});
    for (const role of roles.roles) {
      expect(await users.getByRole("checkbox", { name: role.name, exact: true }).isChecked()).toBe(
        role.name === "Admin",
      );
    }
    const adminPermissions = roles.roles.find((role) => role.name === "Admin")?.permissions ?? [];
    expect(await users.getByRole("list").locator("li").allTextContents()).toEqual(adminPermissions);
    expect(await users.getByLabel("Name", { exact: true }).inputValue()).toBe("Ada Admin");
    expect(await users.getByLabel("Organisation", { exact: true }).inputValue()).toBe("Guy's and St Thomas'");
    await browser.screenshot(page, "users");

    // Someone flip-authz has never seen: shown as such, every role unchecked, and given a first role.
    const newcomer = randomUUID();
    await users.getByLabel("User ID").fill(newcomer);
    await users.getByRole("button", { name: "Look up" }).click();
    await users.getByRole("status").filter({ hasText: "does not know this user yet" }).waitFor();
    expect(await users.getByRole("alert").filter({ hasText: /\S/ }).count()).toBe(0);
    for (const role of roles.roles) {
      expect(await users.getByRole("checkbox", { name: role.name, exact: true }).isChecked()).toBe(false);
    }
    expect(await users.getByRole("listitem").allTextContents()).toEqual(["none"]);
    await users.getByRole("checkbox", { name: "Researcher", exact: true }).check();
    await users.getByRole("button", { name: "Save roles" }).click();
    await users.getByRole("status").filter({ hasText: "Roles saved: Researcher" }).waitFor();
    expect(await users.getByRole("listitem").allTextContents()).toEqual(["CAN_CREATE_PROJECTS"]);
    const saved = await server.client.call(AuthzService.method.getProfile, { userId: newcomer });
    expect(saved.profile?.roles).toEqual(["Researcher"]);

    // A profile name holding HTML is text: shown literally, never turned into elements.
    const html = `<img src=x onerror="document.title='owned'"><b>Eve</b>`;
    await users.getByLabel("Name", { exact: true }).fill(html);
    await users.getByLabel("Organisation", { exact: true }).fill("<script>alert(1)</script>");
    await users.getByRole("button", { name: "Save profile" }).click();
    await users.getByRole("status").filter({ hasText: "Profile saved." }).waitFor();
    expect(await users.locator("dd").allTextContents()).toEqual([html, "<script>alert(1)</script>"]);
    expect(await page.locator("main img, main b, main script").count()).toBe(0);
    expect(await page.title()).toBe("flip-authz console");
    const stored = await server.client.call(AuthzService.method.getProfile, { userId: newcomer });
    expect(stored.profile).toMatchObject({ name: html, organisation: "<script>alert(1)</script>" });
    await page.close();
  });

  it("Users: a name holding HTML written by another client is shown literally on look-up", async () => {
    const user = randomUUID();
    const name = `<svg onload="document.title='owned'"></svg><i>Mallory</i> & co`;
    await server.client.call(AuthzService.method.updateProfile, { userId: user, name });
    const page = await browser.newPage();
    await openConsole(page, base);
    const users = await visit(page, "Users");
    await users.getByLabel("User ID").fill(user);
    await users.getByRole("button", { name: "Look up" }).click();
    await users.getByText(name, { exact: true }).waitFor();
    // Unset fields are left out of Connect JSON: no organisation and no roles are shown as such.
    expect(await users.locator("dl > *").allTextContents()).toEqual([
      "Name",
      name,
      "Organisation",
      "(no organisation)",
    ]);
    expect(await users.getByRole("listitem").allTextContents()).toEqual(["none"]);
    expect(await page.locator("main svg, main i").count()).toBe(0);
    expect(await page.title()).toBe("flip-authz console");
    await page.close();
  });

  it("Roles: one row per permission, one column per role, a mark where the role carries it", async () => {
    const page = await browser.newPage();
    await openConsole(page, base);
    const roles = await visit(page, "Roles");
    const table = roles.getByRole("table");
    await table.getByRole("row").nth(1).waitFor();
    const [listedRoles, listedPermissions] = await Promise.all([
      server.client.call(AuthzService.method.listRoles, {}),
      server.client.call(AuthzService.method.listPermissions, {}),
    ]);
    expect(await table.locator("thead th").allTextContents()).toEqual([
      "Permission",
      ...listedRoles.roles.map((role) => role.name),
    ]);
    expect(await rowsOf(table)).toEqual(
      listedPermissions.permissions.map((permission) => [
        permission.name,
        ...listedRoles.roles.map((role) => (role.permissions.includes(permission.name) ? "✓" : "")),
      ]),
    );
    // Viewer carries nothing (its `permissions` is left out of the JSON): an empty column, not an error.
    const viewer = listedRoles.roles.findIndex((role) => role.name === "Viewer");
    expect((await rowsOf(table)).every((row) => row[viewer + 1] === "")).toBe(true);
    await browser.screenshot(page, "roles");
    await page.close();
  });

  it("Audit: Time, Action, User, By, newest first; Filter by user; Next page to the end", async () => {
    // More events than one page (50) holds, about one user.
    const busy = randomUUID();
    for (let i = 0; i < 30; i++) {
      await server.client.call(AuthzService.method.assignRole, { userId: busy, role: "Viewer" });
      await server.client.call(AuthzService.method.revokeRole, { userId: busy, role: "Viewer" });
    }
    const page = await browser.newPage();
    await openConsole(page, base);
    const audit = await visit(page, "Audit");
    const table = audit.getByRole("table");
    await table.locator("tbody tr").first().waitFor();
    expect(await table.locator("thead th").allTextContents()).toEqual(["Time", "Action", "User", "By"]);
    const expected = (answer: ListAuditEventsResponse) =>
      answer.events.map((event) => [
        `${event.timestamp ? new Date(Number(event.timestamp.seconds) * 1000).toISOString().slice(0, 19).replace("T", " ") : ""} UTC`,
        event.action,
        event.userId,
        event.modifiedByUserId,
      ]);
    const first = await server.client.call(AuthzService.method.listAuditEvents, {});
    expect(await rowsOf(table)).toEqual(expected(first));
    expect((await rowsOf(table))[0]?.slice(1)).toEqual(["Revoked role Viewer", busy, NIL_UUID]);
    await browser.screenshot(page, "audit");

    await audit.getByLabel("User ID").fill(admin);
    await audit.getByRole("button", { name: "Filter" }).click();
    await audit
      .getByRole("status")
      .filter({ hasText: `about ${admin}` })
      .waitFor();
    expect((await rowsOf(table)).map((row) => row.slice(1, 3))).toEqual([
      ["Updated user profile", admin],
      ["Assigned role Admin", admin],
    ]);
    expect(await audit.getByRole("button", { name: "Next page" }).isDisabled()).toBe(true);

    await audit.getByLabel("User ID").fill(busy);
    await audit.getByRole("button", { name: "Filter" }).click();
    await audit
      .getByRole("status")
      .filter({ hasText: `50 events about ${busy}.` })
      .waitFor();
    const firstPage = await server.client.call(AuthzService.method.listAuditEvents, { userId: busy });
    expect(await rowsOf(table)).toEqual(expected(firstPage));
    await audit.getByRole("button", { name: "Next page" }).click();
    await audit
      .getByRole("status")
      .filter({ hasText: `10 events about ${busy}, the last page.` })
      .waitFor();
    const secondPage = await server.client.call(AuthzService.method.listAuditEvents, {
      userId: busy,
      pageToken: firstPage.nextPageToken,
    });
    expect(await rowsOf(table)).toEqual(expected(secondPage));
    expect(await audit.getByRole("button", { name: "Next page" }).isDisabled()).toBe(true);
    await page.close();
  });

  it("Changes: a change made over gRPC appears by itself, newest on top", async () => {
    const page = await browser.newPage();
    await openConsole(page, base);
    const changes = await visit(page, "Changes");
    const table = changes.getByRole("table");
    const user = randomUUID();
    const assigned = await changeShown(page, server, user);
    const updated = await server.client.call(AuthzService.method.updateProfile, {
      userId: user,
      name: "Zed",
    });
    expect(updated.profile?.name).toBe("Zed");
    await table.locator("tbody tr").first().getByRole("cell", { name: "profile", exact: true }).waitFor();
    const rows = await rowsOf(table);
    expect(rows[0]?.slice(1)).toEqual(["profile", user]);
    expect(rows[1]).toEqual([assigned, "user roles", user]);
    expect(Number(rows[0]?.[0])).toBeGreaterThan(Number(rows[1]?.[0]));
    await browser.screenshot(page, "changes");
    await page.close();
  });

  it("made no request to another origin; every file carried the CSP and nosniff; no console error", () => {
    expectCleanTraffic(browser, base);
  });
});

describe.skipIf(!chromium.available)("the Changes page across a restart of the service", () => {
  let db: AppDatabase;
  let browser: Browser;
  const servers: TestApp[] = [];
  beforeAll(async () => {
    db = await createSqliteDatabase();
    browser = await launchBrowser(chromium.path as string);
  });
  afterAll(async () => {
    await browser?.close();
    for (const server of servers) await server.close();
    await db?.close();
  });

  it("says the stream broke, reconnects by itself and resumes after the last revision shown", async () => {
    const port = await freePort();
    const start = async () => {
      const server = await startTestApp(db.url, { AUTHZ_HTTP_LISTEN: `127.0.0.1:${port}` });
      servers.push(server);
      return server;
    };
    const first = await start();
    const page = await browser.newPage();
    await openConsole(page, first.httpBase);
    const changes = await visit(page, "Changes");
    const user = randomUUID();
    const seen = await changeShown(page, first, user);

    await first.close();
    expect(await alertIn(changes)).toMatch(/^The change stream broke; trying again in \d+ s: \[\w+\]/);
    const second = await start();
    // Written at once: whether the page has reconnected yet or not, it asks for what came after `seen`.
    const updated = await second.client.call(AuthzService.method.updateProfile, {
      userId: user,
      name: "Back",
    });
    expect(updated.profile?.name).toBe("Back");
    const table = changes.getByRole("table");
    await table.locator("tbody tr").first().getByRole("cell", { name: "profile", exact: true }).waitFor({
      timeout: 20_000,
    });
    const rows = await rowsOf(table);
    expect(rows[0]?.slice(1)).toEqual(["profile", user]);
    expect(rows.filter((row) => row[0] === seen)).toHaveLength(1);
    expect(Number(rows[0]?.[0])).toBeGreaterThan(Number(seen));
    expect(await changes.getByRole("alert").filter({ hasText: /\S/ }).count()).toBe(0);
    await page.close();
  });
});

describe.skipIf(!chromium.available)("the console signed in with Cognito access tokens", () => {
  let db: AppDatabase;
  let pool: TestPool;
  let server: SecureApp;
  let browser: Browser;
  let connect: ListenerClient;
  let grpc: ListenerClient;
  let base: string;
  const manager = randomUUID();
  const plain = randomUUID();
  let managerToken: string;
  let plainToken: string;
  const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

  beforeAll(async () => {
    db = await createSqliteDatabase();
    pool = await createTestPool();
    server = await startSecureApp(db.url, {
      AUTHZ_LOG_LEVEL: "silent",
      AUTHZ_JWT_ISSUER: ISSUER,
      AUTHZ_JWT_AUDIENCE: CLIENT_ID,
      AUTHZ_JWKS_FILE: pool.jwksFile,
    });
    base = server.httpBase;
    connect = createConnectClient(base);
    grpc = createGrpcClient(server.grpcTarget);
    await server.app.authz.assignRole(manager, "Admin", NIL_UUID);
    await server.app.authz.assignRole(plain, "Researcher", NIL_UUID);
    managerToken = await signAccessToken(pool.rsa, manager);
    plainToken = await signAccessToken(pool.ec, plain);
    browser = await launchBrowser(chromium.path as string);
  });
  afterAll(async () => {
    await browser?.close();
    grpc?.close();
    await server?.close();
    await db?.close();
  });

  async function signIn(page: Page, token: string): Promise<void> {
    await page.getByLabel("Access token").fill(token);
    await page.getByRole("button", { name: "Sign in" }).click();
  }

  it("asks for an access token; a rejected one shows the server's reason and the field again, and is not kept", async () => {
    const page = await browser.newPage();
    await page.goto(`${base}/console/`);
    await page.getByLabel("Access token").waitFor();
    expect(await page.getByRole("navigation").isVisible()).toBe(false);
    await browser.screenshot(page, "sign-in");

    // Signed by a key the pool never published.
    const forged = await signAccessToken(pool.stranger, manager);
    const refusal = await connect.unary(AuthzService.method.listRoles, {}, bearer(forged));
    expect(refusal.message).not.toBe("");
    await signIn(page, forged);
    expect(await alertIn(page.getByRole("region", { name: "Sign in" }))).toBe(
      `Sign-in failed: [unauthenticated] ${refusal.message}`,
    );
    expect(await page.getByLabel("Access token").isVisible()).toBe(true);
    expect(await page.getByLabel("Access token").inputValue()).toBe("");
    expect(await page.getByRole("navigation").isVisible()).toBe(false);
    expect(await storageOf(page)).toEqual({ session: {}, local: 0, cookie: "" });
    await browser.screenshot(page, "sign-in-rejected");
    await page.close();
  });

  it("a manager signs in: the token kept in sessionStorage only, sent as Bearer, kept on reload; writes go through; Sign out forgets it", async () => {
    const page = await browser.newPage();
    await page.goto(`${base}/console/`);
    await signIn(page, managerToken);
    await page
      .getByRole("status")
      .filter({ hasText: `Signed in as ${manager}` })
      .waitFor();
    expect(await page.getByLabel("Access token").isVisible()).toBe(false);
    expect(await storageOf(page)).toEqual({
      session: { "flip-authz.access-token": managerToken },
      local: 0,
      cookie: "",
    });

    // A write from the page: same origin, so the Origin check lets it through, with the manager as actor.
    const newcomer = randomUUID();
    const users = await visit(page, "Users");
    await users.getByLabel("User ID").fill(newcomer);
    await users.getByRole("button", { name: "Look up" }).click();
    await users.getByRole("checkbox", { name: "Viewer", exact: true }).check();
    const [write] = await Promise.all([
      page.waitForRequest((request) => request.url().endsWith(".AuthzService/SetUserRoles")),
      users.getByRole("button", { name: "Save roles" }).click(),
    ]);
    await users.getByRole("status").filter({ hasText: "Roles saved: Viewer" }).waitFor();
    const headers = await write.allHeaders();
    expect(headers.origin).toBe(new URL(base).origin);
    expect(headers.authorization).toBe(`Bearer ${managerToken}`);
    const profile = await grpc.unary(
      AuthzService.method.getProfile,
      { userId: newcomer },
      bearer(managerToken),
    );
    expect(profile.body).toMatchObject({ profile: { roles: ["Viewer"] } });
    const audit = await grpc.unary(
      AuthzService.method.listAuditEvents,
      { userId: newcomer },
      bearer(managerToken),
    );
    expect(audit.body).toMatchObject({
      events: [{ action: "Updated user roles", modifiedByUserId: manager }],
    });

    await page.reload();
    await page
      .getByRole("status")
      .filter({ hasText: `Signed in as ${manager}` })
      .waitFor();
    await visit(page, "Audit");
    await region(page, "Audit").locator("tbody tr").first().waitFor();

    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByLabel("Access token").waitFor();
    expect(await storageOf(page)).toEqual({ session: {}, local: 0, cookie: "" });
    expect(await page.getByRole("navigation").isVisible()).toBe(false);
    await page.reload();
    await page.getByLabel("Access token").waitFor();
    expect(await page.getByRole("navigation").isVisible()).toBe(false);
    await page.close();
  });

  it("a plain user can do what they may: look themself up and edit their profile; a refused write is an alert", async () => {
    const page = await browser.newPage();
    await page.goto(`${base}/console/`);
    await signIn(page, plainToken);
    await page
      .getByRole("status")
      .filter({ hasText: `Signed in as ${plain}` })
      .waitFor();
    const users = await visit(page, "Users");
    await users.getByLabel("User ID").fill(plain);
    await users.getByRole("button", { name: "Look up" }).click();
    await users.getByRole("checkbox", { name: "Researcher", exact: true }).waitFor();
    expect(await users.getByRole("checkbox", { name: "Researcher", exact: true }).isChecked()).toBe(true);

    await users.getByRole("checkbox", { name: "Admin", exact: true }).check();
    await users.getByRole("button", { name: "Save roles" }).click();
    const denied = await connect.unary(
      AuthzService.method.setUserRoles,
      { userId: plain, roles: ["Admin", "Researcher"] },
      bearer(plainToken),
    );
    expect(denied.message).not.toBe("");
    expect(await alertIn(users)).toBe(`Roles not saved: [permission_denied] ${denied.message}`);
    await browser.screenshot(page, "users-denied");
    const after = await grpc.unary(AuthzService.method.getProfile, { userId: plain }, bearer(managerToken));
    expect(after.body).toMatchObject({ profile: { roles: ["Researcher"] } });

    await users.getByLabel("Name", { exact: true }).fill("Pat Plain");
    await users.getByRole("button", { name: "Save profile" }).click();
    await users.getByRole("status").filter({ hasText: "Profile saved." }).waitFor();
    expect(await users.locator("dd").first().textContent()).toBe("Pat Plain");
    expect(await users.getByRole("alert").filter({ hasText: /\S/ }).count()).toBe(0);

    const audit = await visit(page, "Audit");
    expect(await alertIn(audit)).toMatch(/^\[permission_denied\] \S/);
    const changes = await visit(page, "Changes");
    expect(await alertIn(changes)).toMatch(/^\[permission_denied\] \S/);
    await changes.getByRole("status").filter({ hasText: "Not watching." }).waitFor();
    await page.close();
  });

  it("a token that expires while signed in brings back the field, saying why, and is forgotten", async () => {
    // Valid for about 8 s more (60 s of leeway past `exp`).
    const expiresIn = 8 - CLOCK_TOLERANCE_SECONDS;
    const token = await signAccessToken(pool.rsa, manager, { expiresIn });
    const expiresAt = Date.now() + 8_000;
    const page = await browser.newPage();
    await page.goto(`${base}/console/`);
    await signIn(page, token);
    await page
      .getByRole("status")
      .filter({ hasText: `Signed in as ${manager}` })
      .waitFor();
    await page.waitForTimeout(expiresAt + 1500 - Date.now());
    await page.getByRole("link", { name: "Roles", exact: true }).click();
    await page.getByLabel("Access token").waitFor();
    const refusal = await connect.unary(AuthzService.method.listRoles, {}, bearer(token));
    expect(refusal.message).toMatch(/exp/);
    expect(await alertIn(page.getByRole("region", { name: "Sign in" }))).toBe(
      `Signed out: [unauthenticated] ${refusal.message}`,
    );
    expect(await storageOf(page)).toEqual({ session: {}, local: 0, cookie: "" });
    await page.close();
  });

  it("made no request to another origin; every file carried the CSP and nosniff; no console error", () => {
    expectCleanTraffic(browser, base);
  });
});
