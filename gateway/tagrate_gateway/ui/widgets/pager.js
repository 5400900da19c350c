// Page links: numbered pages around the current one (first and last
// always), previous/next and a jump-to-page box; drawn above and below a
// grid. ``hashFor(p)`` is page p's link.

import { h } from "../lib/dom.js";
import { go } from "../lib/router.js";

const AROUND = 2;

export function pager({ hashFor, page, maxPage, total, where = "bottom", noun = "image" }) {
  const id = (name) => (where === "bottom" ? name : `${where}-${name}`);
  const link = (p, text, name) =>
    p >= 1 && p <= maxPage && p !== page
      ? h("a", { class: "button", href: hashFor(p), id: id(name) }, text)
      : h("button", { type: "button", disabled: true, id: id(name) }, text);
  const numbers = [];
  let last = 0;
  for (let p = 1; p <= maxPage; p += 1) {
    if (p !== 1 && p !== maxPage && Math.abs(p - page) > AROUND) continue;
    if (p - last > 1) numbers.push(h("span", { class: "gap", "aria-hidden": "true" }, "…"));
    numbers.push(
      h(
        "a",
        {
          class: "button num",
          href: hashFor(p),
          "aria-label": `Page ${p}`,
          "aria-current": p === page ? "page" : null,
          dataset: { page: p },
        },
        String(p),
      ),
    );
    last = p;
  }
  const jump = h("input", {
    type: "number",
    id: id("page-jump"),
    min: 1,
    max: maxPage,
    value: page,
    inputmode: "numeric",
    "aria-label": `Go to page (1 to ${maxPage})`,
  });
  // novalidate: a page past either end is taken to that end, not refused.
  const form = h("form", { class: "jump", novalidate: true }, jump, h("button", { type: "submit", id: id("page-go") }, "Go"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const p = Math.min(maxPage, Math.max(1, parseInt(jump.value, 10) || 1));
    go(hashFor(p));
  });
  return h(
    "nav",
    { class: "pager", "aria-label": where === "bottom" ? "Pages" : "Pages (top)" },
    link(page - 1, "‹ Previous", "page-prev"),
    ...numbers,
    link(page + 1, "Next ›", "page-next"),
    maxPage > 1 ? form : null,
    h("span", { id: id("page-info") }, `Page ${page} of ${maxPage} · ${total} ${noun}${total === 1 ? "" : "s"}`),
  );
}
