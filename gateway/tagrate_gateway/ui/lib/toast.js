// Toasts: short notices (saved, removed, uploaded, failed) in one live
// region at the bottom of the page; each goes after a few seconds.

import { h } from "./dom.js";

const SHOW_MS = 3500;

function region() {
  let el = document.getElementById("toasts");
  if (!el) {
    el = h("div", { id: "toasts", class: "toasts", role: "status", "aria-live": "polite" });
    document.body.append(el);
  }
  return el;
}

/** Shows ``message``; ``kind`` is "ok" or "error" (errors stay twice as long). */
export function toast(message, kind = "ok") {
  const el = h("div", { class: `toast ${kind}` }, message);
  region().append(el);
  setTimeout(() => el.remove(), kind === "error" ? 2 * SHOW_MS : SHOW_MS);
  return el;
}
