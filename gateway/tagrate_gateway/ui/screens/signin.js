// Sign in: a token with access control on; with it off (or for an admin
// token without a user), the user whose data to show.

import { api, describe } from "../lib/api.js";
import { h, mount } from "../lib/dom.js";
import { go } from "../lib/router.js";
import { chooseUser, loadSession, session, signedIn, USER_RE } from "../lib/session.js";

async function knownUsers() {
  try {
    return (await api("verifydatasets")).users.map((u) => u.user);
  } catch {
    return []; // only a convenience for the picker
  }
}

function tokenForm() {
  const error = h("p", { class: "error", role: "alert", id: "signin-error" });
  const input = h("input", { type: "password", id: "token", name: "token", autocomplete: "off", required: true });
  const form = h(
    "form",
    { id: "signin-form" },
    h("label", {}, "Access token", input),
    h("button", { class: "primary", type: "submit" }, "Sign in"),
    error,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    try {
      await api("login", { method: "POST", json: { token: input.value.trim() } });
      input.value = ""; // the secret lives only in the HttpOnly cookie from here on
      await loadSession();
      go(session.user ? "#/library" : "#/signin");
    } catch (err) {
      error.textContent = err.status === 401 ? "That token is not valid (or has expired or been revoked)." : describe(err);
    }
  });
  mount(h("section", { class: "card signin" }, h("h1", {}, "Sign in"), form));
  input.focus();
}

export async function render() {
  if (session.auth && !signedIn()) {
    tokenForm();
    return;
  }
  // Access control off, or an admin token without a user: pick whose data to show.
  const error = h("p", { class: "error", role: "alert", id: "signin-error" });
  const list = h("datalist", { id: "known-users" });
  const input = h("input", {
    type: "text",
    id: "user-name",
    name: "user",
    list: "known-users",
    autocomplete: "username",
    required: true,
    pattern: "[A-Za-z0-9_.\\-]{1,64}",
    value: session.user || "",
  });
  const form = h(
    "form",
    { id: "signin-form" },
    h("label", {}, "Your user name", input),
    h("p", { class: "muted" }, "1–64 letters, digits, '_', '.' or '-'. A new name starts with your first rating."),
    h("button", { class: "primary", type: "submit" }, "Continue"),
    error,
    list,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const name = input.value.trim();
    if (!USER_RE.test(name) || name === "all") {
      error.textContent = "Use 1–64 letters, digits, '_', '.' or '-' (and not 'all').";
      return;
    }
    chooseUser(name);
    go("#/library");
  });
  const intro = session.auth
    ? "Signed in with an admin token. Whose ratings do you want to see?"
    : "Access control is off on this gateway: pick the user whose ratings you want to see and change.";
  mount(h("section", { class: "card signin" }, h("h1", {}, "Choose a user"), h("p", {}, intro), form));
  input.focus();
  for (const name of await knownUsers()) list.append(h("option", { value: name }));
}
