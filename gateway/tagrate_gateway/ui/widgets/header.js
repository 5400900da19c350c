// The top bar: the screens' links (from app.js's table) and who is signed in.

import { api, describe } from "../lib/api.js";
import { $, banner, h } from "../lib/dom.js";
import { go } from "../lib/router.js";
import { forgetUser, session, signedIn, signedOut } from "../lib/session.js";
import { currentTheme, toggleTheme } from "../lib/theme.js";

function switchUser() {
  forgetUser();
  go("#/signin");
}

async function signOut() {
  try {
    await api("logout", { method: "POST" });
  } catch (error) {
    banner(describe(error));
  }
  signedOut();
  go("#/signin");
}

/** The top bar's renderer for ``screens`` (app.js's table); call it with the current screen. */
export function header(screens) {
  const nav = $("#nav");
  const links = Object.entries(screens)
    .filter(([, s]) => s.nav)
    .map(([name, s]) => h("a", { href: `#/${name}`, id: `nav-${name}`, dataset: { screen: name } }, s.nav));
  nav.replaceChildren(...links);
  return (current) => {
    nav.hidden = !signedIn() || !session.user;
    const shown = screens[current] && screens[current].under ? screens[current].under : current;
    for (const link of links) {
      const screen = screens[link.dataset.screen];
      link.hidden = Boolean(screen.admin && !session.admin);
      if (link.dataset.screen === shown) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    const who = $("#who");
    const theme = h("button", {
      type: "button",
      id: "theme-toggle",
      title: "Light or dark theme",
      "aria-pressed": String(currentTheme() === "dark"),
      onclick: () => {
        toggleTheme();
        theme.setAttribute("aria-pressed", String(currentTheme() === "dark"));
        theme.textContent = currentTheme() === "dark" ? "☀ Light" : "☾ Dark";
      },
    }, currentTheme() === "dark" ? "☀ Light" : "☾ Dark");
    who.replaceChildren(theme);
    if (!signedIn()) return;
    const label = session.user ? `Signed in as ${session.user}` : "Admin";
    // "(admin)" only means something with access control on: without it everyone may do everything.
    who.append(h("span", { id: "who-name" }, label, session.auth && session.admin && session.user ? " (admin)" : ""));
    if (!session.auth || (session.admin && session.user)) {
      who.append(h("button", { type: "button", id: "switch-user", onclick: switchUser }, "Switch user"));
    }
    if (session.auth) who.append(h("button", { type: "button", id: "sign-out", onclick: signOut }, "Sign out"));
  };
}
