// The console's shell: find out whether the service needs a token (a call without one succeeds in open
// mode), sign in and out (the token in sessionStorage only), and show one page at a time from the
// navigation (#check, #users, #roles, #audit, #changes).

import { Code, ConnectError } from "@connectrpc/connect";
import { createAuthzClient } from "./api.ts";
import { createCatalog } from "./catalog.ts";
import { byId, clear, describeError, onSubmit, showError } from "./dom.ts";
import { createAuditPage } from "./pages/audit.ts";
import { createChangesPage } from "./pages/changes.ts";
import { createCheckPage } from "./pages/check.ts";
import type { Context, Page } from "./pages/page.ts";
import { createRolesPage } from "./pages/roles.ts";
import { createUsersPage } from "./pages/users.ts";
import { session, subjectOf } from "./session.ts";

const PAGES = ["check", "users", "roles", "audit", "changes"] as const;
type PageName = (typeof PAGES)[number];

const loading = byId("loading", HTMLParagraphElement);
const consoleAlert = byId("console-alert", HTMLDivElement);
const retry = byId("retry", HTMLButtonElement);
const sessionStatus = byId("session-status", HTMLParagraphElement);
const signOut = byId("sign-out", HTMLButtonElement);
const signIn = byId("sign-in", HTMLElement);
const signInForm = byId("sign-in-form", HTMLFormElement);
const tokenInput = byId("token", HTMLInputElement);
const signInAlert = byId("sign-in-alert", HTMLDivElement);
const app = byId("console", HTMLDivElement);

/** The token this tab signed in with; null in open mode and before signing in. */
let token: string | null = null;
const client = createAuthzClient(
  () => token,
  (refusal) => {
    // The token stopped working (it expired): forget it and start afresh, saying why, on the sign-in form.
    if (token === null) return;
    token = null;
    session.end(describeError(refusal));
    location.replace(location.pathname);
  },
);

/** Asks the service with `candidate` (null: no token); resolves to the error, or null when it answered. */
async function probe(candidate: string | null): Promise<ConnectError | null> {
  try {
    await createAuthzClient(() => candidate).listRoles({});
    return null;
  } catch (error) {
    return ConnectError.from(error);
  }
}

async function start(): Promise<void> {
  clear(consoleAlert);
  retry.hidden = true;
  loading.hidden = false;
  const anonymous = await probe(null);
  loading.hidden = true;
  if (anonymous === null) {
    // Open mode: every call is allowed, so there is nothing to sign in to.
    session.forget();
    sessionStatus.textContent = "Open mode: no sign-in needed";
    return openConsole();
  }
  if (anonymous.code !== Code.Unauthenticated) {
    showError(consoleAlert, anonymous, "Cannot reach flip-authz: ");
    retry.hidden = false;
    return;
  }
  const stored = session.token();
  if (stored !== null) return trySignIn(stored);
  showSignIn();
}

function showSignIn(): void {
  signIn.hidden = false;
  tokenInput.value = "";
  tokenInput.focus();
  const ended = session.takeEndReason();
  if (ended !== null) signInAlert.textContent = `Signed out: ${ended}`;
}

async function trySignIn(candidate: string): Promise<void> {
  clear(signInAlert);
  const refused = await probe(candidate);
  if (refused !== null) {
    // A token the service rejects is forgotten; one it could not check (the service away) is not kept either.
    session.forget();
    showSignIn();
    showError(signInAlert, refused, "Sign-in failed: ");
    return;
  }
  token = candidate;
  session.keep(candidate);
  signIn.hidden = true;
  const sub = subjectOf(candidate);
  sessionStatus.textContent = sub === null ? "Signed in" : `Signed in as ${sub}`;
  signOut.hidden = false;
  openConsole();
}

function openConsole(): void {
  const context: Context = { client, catalog: createCatalog(client) };
  const pages: Record<PageName, Page> = {
    check: createCheckPage(context),
    users: createUsersPage(context),
    roles: createRolesPage(context),
    audit: createAuditPage(context),
    changes: createChangesPage(context),
  };
  app.hidden = false;
  const route = (moveFocus: boolean) => {
    const hash = location.hash.slice(1);
    const name: PageName = (PAGES as readonly string[]).includes(hash) ? (hash as PageName) : "check";
    for (const other of PAGES) byId(`page-${other}`, HTMLElement).hidden = other !== name;
    for (const link of app.querySelectorAll<HTMLAnchorElement>("nav a")) {
      if (link.hash === `#${name}`) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    pages[name].show();
    // A keyboard user who followed a link lands on the page's heading, not back at the top.
    if (moveFocus) byId(`${name}-heading`, HTMLHeadingElement).focus();
  };
  window.addEventListener("hashchange", () => route(true));
  // Following the link of the page already shown changes no hash, so no hashchange: move focus here.
  for (const link of app.querySelectorAll<HTMLAnchorElement>("nav a")) {
    link.addEventListener("click", () => {
      if (link.hash === location.hash) route(true);
    });
  }
  route(false);
}

onSubmit(signInForm, async () => {
  const candidate = tokenInput.value.trim();
  if (candidate === "") {
    signInAlert.textContent = "Access token: paste a token first.";
    tokenInput.focus();
    return;
  }
  await trySignIn(candidate);
});

signOut.addEventListener("click", () => {
  // Forget the token, then start afresh: nothing of the signed-in session (pages, streams) stays in memory.
  session.forget();
  location.replace(location.pathname);
});

retry.addEventListener("click", () => void start());

void start();
