// The view lives in the URL fragment (#/library?sort=...&page=2,
// #/image/NAME?filters=...), so a reload or a shared link shows the same
// screen. Each screen is a module under screens/ with a render(view)
// function; app.js lists them (one line each). Every navigation bumps a
// token: a screen's async work checks isCurrent(view.token) and stops once
// the user has moved on.

import { describe } from "./api.js";
import { $, banner, mount, errorText } from "./dom.js";
import { loadSession, session, signedIn } from "./session.js";

let screens = {};
let viewToken = 0;
let keys = null;
let header = () => {};

export const isCurrent = (token) => token === viewToken;

export function go(hash, replace = false) {
  if (location.hash === hash) route();
  else if (replace) {
    history.replaceState(null, "", hash);
    route();
  } else location.hash = hash;
}

export function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, search = ""] = raw.split("?", 2);
  const parts = path.split("/").map(decodeURIComponent);
  return { screen: parts[0] || "library", arg: parts[1] || null, params: new URLSearchParams(search) };
}

/** The current screen's keyboard shortcuts (cleared on every navigation). */
export function setKeys(handler) {
  keys = handler;
}

document.addEventListener("keydown", (event) => {
  if (!keys || event.altKey || event.ctrlKey || event.metaKey) return;
  const target = event.target;
  if (target instanceof HTMLElement && target.closest("input, select, textarea")) return;
  keys(event);
});

async function route() {
  const token = ++viewToken;
  keys = null;
  banner(null);
  try {
    if (!session.ready) await loadSession();
  } catch (error) {
    mount(errorText(describe(error)));
    return;
  }
  const parsed = parseHash();
  let name = !signedIn() || !session.user ? "signin" : parsed.screen;
  if (!screens[name] || (name === "image" && !parsed.arg)) name = "library";
  header(name);
  document.title = `tagrate · ${name}`;
  try {
    const screen = await screens[name].load();
    if (token === viewToken) await screen.render({ arg: parsed.arg, params: parsed.params, token });
  } catch (error) {
    if (token === viewToken) banner(describe(error));
  }
  if (token === viewToken && document.activeElement === document.body) $("#main").focus({ preventScroll: true });
}

/** Starts routing over ``table`` (name -> {load, ...}); ``renderHeader(name)`` draws the top bar. */
export function start(table, renderHeader) {
  screens = table;
  header = renderHeader;
  window.addEventListener("hashchange", route);
  route();
}
