// Page links under the grid.

import { h } from "../lib/dom.js";
import { libraryHash } from "../lib/listing.js";

export function pager(ctx, page, maxPage, total) {
  const link = (p, text, id) =>
    p >= 1 && p <= maxPage && p !== page
      ? h("a", { class: "button", href: libraryHash(ctx, p), id }, text)
      : h("button", { type: "button", disabled: true, id }, text);
  return h(
    "nav",
    { class: "pager", "aria-label": "Pages" },
    link(1, "« First", "page-first"),
    link(page - 1, "‹ Previous", "page-prev"),
    h("span", { id: "page-info" }, `Page ${page} of ${maxPage} · ${total} image${total === 1 ? "" : "s"}`),
    link(page + 1, "Next ›", "page-next"),
    link(maxPage, "Last »", "page-last"),
  );
}
