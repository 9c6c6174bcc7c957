// Users: look a user up (GetProfile), give or take roles (SetUserRoles, one checkbox per role from
// ListRoles), edit name and organisation (UpdateProfile). A user flip-authz does not know yet (NOT_FOUND)
// is shown as such, every role unchecked, so a first role can be given.

import { Code, ConnectError } from "@connectrpc/connect";
import type { Profile, Role } from "../../../gen/flip/authz/v1/authz_pb.ts";
import { byId, clear, el, onSubmit, showError } from "../dom.ts";
import type { Context, Page } from "./page.ts";

export function createUsersPage({ client, catalog }: Context): Page {
  const form = byId("users-form", HTMLFormElement);
  const input = byId("users-user", HTMLInputElement);
  const alert = byId("users-alert", HTMLDivElement);
  const status = byId("users-status", HTMLParagraphElement);
  const detail = byId("users-detail", HTMLDivElement);
  const title = byId("users-title", HTMLHeadingElement);
  const name = byId("users-name", HTMLElement);
  const organisation = byId("users-organisation", HTMLElement);
  const rolesForm = byId("users-roles-form", HTMLFormElement);
  const roleBoxes = byId("users-roles", HTMLDivElement);
  const permissions = byId("users-permissions", HTMLUListElement);
  const profileForm = byId("users-profile-form", HTMLFormElement);
  const nameInput = byId("profile-name", HTMLInputElement);
  const organisationInput = byId("profile-organisation", HTMLInputElement);

  /** The user shown (as the service spells the id), or null when none is. */
  let shown: string | null = null;

  /** Shows `profile` (null: a user the service does not know yet) with every role as a checkbox. */
  const render = (userId: string, profile: Profile | null, roles: Role[]) => {
    shown = userId;
    title.textContent = userId;
    name.textContent = profile?.name || "(no name)";
    organisation.textContent = profile?.organisation || "(no organisation)";
    const held = new Set(profile?.roles ?? []);
    roleBoxes.replaceChildren(
      ...roles.map((role, i) => {
        const box = el("input", { type: "checkbox", id: `users-role-${i}`, value: role.name });
        box.checked = held.has(role.name);
        const label = el("label", { for: box.id }, role.name);
        return el("div", { title: role.description }, box, " ", label);
      }),
    );
    const granted = profile?.permissions ?? [];
    permissions.replaceChildren(
      ...(granted.length > 0 ? granted.map((p) => el("li", {}, p)) : [el("li", { class: "muted" }, "none")]),
    );
    nameInput.value = profile?.name ?? "";
    organisationInput.value = profile?.organisation ?? "";
    detail.hidden = false;
  };

  /**
   * GetProfile (reflecting at least `atLeastAsFresh`: the revision of a write just made, so the page shows
   * it even when another replica answers) and the role list; true when something is shown.
   */
  const lookUp = async (userId: string, atLeastAsFresh = ""): Promise<boolean> => {
    try {
      const roles = await catalog.roles();
      try {
        const { profile } = await client.getProfile({ userId, atLeastAsFresh });
        render(profile?.userId || userId.toLowerCase(), profile ?? null, roles);
      } catch (error) {
        if (!(error instanceof ConnectError && error.code === Code.NotFound)) throw error;
        render(userId.toLowerCase(), null, roles);
        status.textContent =
          "flip-authz does not know this user yet: no profile and no roles. Give a first role below.";
      }
      return true;
    } catch (error) {
      showError(alert, error);
      return false;
    }
  };

  onSubmit(form, async () => {
    clear(alert, status);
    detail.hidden = true;
    shown = null;
    await lookUp(input.value.trim());
  });

  onSubmit(rolesForm, async () => {
    if (shown === null) return;
    const userId = shown;
    clear(alert, status);
    const chosen = [...roleBoxes.querySelectorAll<HTMLInputElement>("input[type=checkbox]")]
      .filter((box) => box.checked)
      .map((box) => box.value);
    try {
      const answer = await client.setUserRoles({ userId, roles: chosen });
      if (await lookUp(userId, answer.writtenAt)) {
        const roles = answer.roles.length > 0 ? answer.roles.join(", ") : "none";
        status.textContent = answer.changed
          ? `Roles saved: ${roles} (revision ${answer.writtenAt}).`
          : `No change: the roles were already ${roles}.`;
      }
    } catch (error) {
      showError(alert, error, "Roles not saved: ");
    }
  });

  onSubmit(profileForm, async () => {
    if (shown === null) return;
    const userId = shown;
    clear(alert, status);
    try {
      const answer = await client.updateProfile({
        userId,
        name: nameInput.value,
        organisation: organisationInput.value,
      });
      if (await lookUp(userId, answer.writtenAt)) status.textContent = "Profile saved.";
    } catch (error) {
      showError(alert, error, "Profile not saved: ");
    }
  });

  return { show() {} };
}
