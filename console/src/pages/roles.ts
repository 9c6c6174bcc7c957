// Roles: one row per permission, one column per role, a mark where the role carries the permission
// (ListRoles and ListPermissions, fetched again each time the page is opened).

import { byId, clear, el, showError } from "../dom.ts";
import type { Context, Page } from "./page.ts";

export function createRolesPage({ catalog }: Context): Page {
  const alert = byId("roles-alert", HTMLDivElement);
  const table = byId("roles-table", HTMLTableElement);
  const head = table.tHead ?? table.createTHead();
  const body = table.tBodies[0] ?? table.createTBody();

  const load = async () => {
    clear(alert);
    catalog.refresh();
    try {
      const [roles, permissions] = await Promise.all([catalog.roles(), catalog.permissions()]);
      const carries = roles.map((role) => new Set(role.permissions));
      head.replaceChildren(
        el(
          "tr",
          {},
          el("th", { scope: "col" }, "Permission"),
          ...roles.map((role) => el("th", { scope: "col", title: role.description }, role.name)),
        ),
      );
      body.replaceChildren(
        ...permissions.map((permission) =>
          el(
            "tr",
            {},
            el("th", { scope: "row", class: "mono", title: permission.description }, permission.name),
            ...roles.map((role, i) =>
              carries[i]?.has(permission.name)
                ? el("td", { class: "mark", title: `${role.name} carries ${permission.name}` }, "✓")
                : el("td", {}),
            ),
          ),
        ),
      );
    } catch (error) {
      showError(alert, error);
    }
  };

  return {
    show() {
      void load();
    },
  };
}
