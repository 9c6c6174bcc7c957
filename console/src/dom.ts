// DOM helpers. Everything the service or a user supplied goes into the page as text nodes (textContent,
// append of strings): never through innerHTML, so a name like `<img onerror=…>` is shown, not run.

import { ConnectError } from "@connectrpc/connect";

/** The element with this id, checked to be of the expected kind (the page and the script agree). */
export function byId<T extends HTMLElement>(id: string, kind: new () => T): T {
  const element = document.getElementById(id);
  if (!(element instanceof kind)) throw new Error(`the page has no ${kind.name} #${id}`);
  return element;
}

type Child = Node | string;

/** A new element with text or child nodes; strings become text nodes. */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: Record<string, string> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  element.append(...children);
  return element;
}

/** What a failed call shows: the status code and the server's message as it came. */
export function describeError(error: unknown): string {
  if (error instanceof ConnectError) return error.message;
  return error instanceof Error ? error.message : String(error);
}

/** Puts the error into a role="alert" element (announced by screen readers, shown while not empty). */
export function showError(alert: HTMLElement, error: unknown, prefix = ""): void {
  alert.textContent = `${prefix}${describeError(error)}`;
}

export function clear(...elements: HTMLElement[]): void {
  for (const element of elements) element.replaceChildren();
}

/** Runs `handler` on submit, without letting the browser submit the form anywhere. */
export function onSubmit(form: HTMLFormElement, handler: () => Promise<void>): void {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void handler();
  });
}

/** A timestamp as an operator reads it: ISO 8601 in UTC, to the second. */
export function formatTime(date: Date | undefined): string {
  return date ? `${date.toISOString().slice(0, 19).replace("T", " ")} UTC` : "";
}
