// Check: may this user do this? CheckPermission with a permission picked from ListPermissions; the answer
// names the roles that grant it and the revision it was read at.

import type { CheckPermissionResponse } from "../../../gen/flip/authz/v1/authz_pb.ts";
import { byId, clear, el, onSubmit, showError } from "../dom.ts";
import type { Context, Page } from "./page.ts";

export function createCheckPage({ client, catalog }: Context): Page {
  const form = byId("check-form", HTMLFormElement);
  const user = byId("check-user", HTMLInputElement);
  const permission = byId("check-permission", HTMLSelectElement);
  const alert = byId("check-alert", HTMLDivElement);
  const result = byId("check-result", HTMLDivElement);
  let loaded = false;

  const loadPermissions = async () => {
    try {
      const permissions = await catalog.permissions();
      const chosen = permission.value;
      permission.replaceChildren(
        ...permissions.map((p) => el("option", { value: p.name, title: p.description }, p.name)),
      );
      if (chosen !== "" && permissions.some((p) => p.name === chosen)) permission.value = chosen;
      loaded = true;
    } catch (error) {
      showError(alert, error, "Could not list the permissions: ");
    }
  };

  onSubmit(form, async () => {
    clear(alert, result);
    try {
      const answer = await client.checkPermission({
        userId: user.value.trim(),
        permission: permission.value,
      });
      result.append(...render(answer));
    } catch (error) {
      showError(alert, error);
    }
  });

  return {
    show() {
      if (!loaded) void loadPermissions();
    },
  };
}

function render(answer: CheckPermissionResponse): HTMLElement[] {
  const lines = answer.allowed
    ? [
        el("p", { class: "answer allowed" }, "Allowed"),
        el("p", {}, `granted by ${answer.grantedBy.join(", ")}`),
      ]
    : [el("p", { class: "answer denied" }, "Denied")];
  lines.push(
    el("p", { class: "muted" }, "read at revision ", el("span", { class: "mono" }, answer.checkedAt)),
  );
  return lines;
}
