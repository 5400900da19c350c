// The library: a grid of one page of the user's listing (/getuserdata),
// with the filter, sort and "show" controls above it and page links below.

import { describe, isNotFound, query } from "../lib/api.js";
import { emptyState, h, mount } from "../lib/dom.js";
import { fmt } from "../lib/format.js";
import { cacheListing, fetchPage, imageHash, libraryHash, listContext, THUMB_SIZE } from "../lib/listing.js";
import { go, isCurrent } from "../lib/router.js";
import { session } from "../lib/session.js";
import { pager } from "../widgets/pager.js";
import { tagSuggestions } from "../widgets/tagbox.js";
import { dropPanel, enableDropSearch } from "../widgets/similar.js";

const SORTS = [
  ["date-desc", "Newest rated"],
  ["date-asc", "Oldest rated"],
  ["rating-desc", "Highest rating"],
  ["rating-asc", "Lowest rating"],
  ["predicted-desc", "For you (predicted)"],
  ["predicted-asc", "Predicted lowest"],
  ["name-asc", "Name A–Z"],
  ["name-desc", "Name Z–A"],
];
const RATED = [
  ["yes", "Rated"],
  ["no", "Not rated"],
  ["all", "All"],
];

function controls(ctx) {
  const filter = h("input", {
    type: "search",
    id: "filter",
    name: "filters",
    value: ctx.filters,
    list: "tag-suggestions",
    placeholder: "cat, sofa, -dog",
    autocomplete: "off",
    "aria-describedby": "filter-help",
  });
  const suggestions = h("datalist", { id: "tag-suggestions" });
  tagSuggestions(filter, suggestions);
  const select = (id, label, options, value) =>
    h(
      "label",
      {},
      label,
      h("select", { id, name: id }, ...options.map(([v, text]) => h("option", { value: v, selected: v === value }, text))),
    );
  const form = h(
    "form",
    { class: "controls", id: "library-controls", role: "search" },
    h("label", { class: "filter" }, "Tags (all of them; -tag excludes)", filter),
    select("sort", "Sort", SORTS, ctx.sort),
    select("rated", "Show", RATED, ctx.rated),
    h("button", { type: "submit", class: "primary" }, "Apply"),
    suggestions,
    h("span", { id: "filter-help", hidden: true }, "Comma-separated tag names; prefix a tag with - to exclude it."),
  );
  const apply = () => {
    const data = new FormData(form);
    go(libraryHash({ filters: String(data.get("filters")).trim(), sort: data.get("sort"), rated: data.get("rated") }));
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    apply();
  });
  for (const el of form.querySelectorAll("select")) el.addEventListener("change", apply);
  return form;
}

function tile(item, ctx) {
  let badge = null;
  let label = "not rated";
  if (item.rating !== null && item.rating !== undefined) {
    badge = h("span", { class: "badge" }, `★ ${fmt(item.rating)}`);
    label = `rated ${fmt(item.rating)}`;
  } else if (item.predicted !== null && item.predicted !== undefined) {
    badge = h("span", { class: "badge pred" }, `≈ ${fmt(item.predicted)}`);
    label = `predicted ${fmt(item.predicted)}`;
  }
  const src = `getthumbnail?${query({ image: item.image, size: THUMB_SIZE })}`;
  return h(
    "li",
    { class: "tile", dataset: { image: item.image } },
    h(
      "a",
      { href: imageHash(item.image, ctx), "aria-label": `${item.image.slice(0, 12)}…, ${label}` },
      h("img", { src, alt: "", width: THUMB_SIZE, height: THUMB_SIZE, decoding: "async" }),
      badge,
    ),
  );
}

function failed(error, ctx) {
  if (isNotFound(error)) {
    return emptyState(
      `${session.user} has no ratings yet.`,
      h("a", { class: "button", href: "#/upload" }, "Upload and rate your first images"),
    );
  }
  if (error.status === 400 && ctx.sort.startsWith("predicted")) {
    return emptyState(
      "Sorting by prediction is not available on this server yet.",
      h("a", { class: "button", href: libraryHash({ ...ctx, sort: "date-desc" }) }, "Sort by date instead"),
    );
  }
  return h("p", { class: "error", role: "alert" }, describe(error));
}

export async function render({ params, token }) {
  const ctx = listContext(params);
  const page = Math.max(1, parseInt(params.get("page") || "1", 10) || 1);
  const status = h("p", { class: "muted", id: "library-status", "aria-live": "polite" }, "Loading…");
  const grid = h("ul", { class: "grid", id: "grid", "aria-label": "Images" });
  const dropped = dropPanel();
  mount(h("h1", {}, "Library"), controls(ctx), dropped, status, grid);
  enableDropSearch(document.querySelector("#main"), dropped, ctx); // search by dropping an image
  let reply;
  try {
    reply = await fetchPage(ctx, page);
  } catch (error) {
    if (!isCurrent(token)) return;
    status.remove();
    grid.replaceWith(failed(error, ctx));
    return;
  }
  if (!isCurrent(token)) return;
  cacheListing(ctx, page, reply.images);
  if (reply.images.length === 0) {
    status.remove();
    const text =
      reply.total === 0
        ? ctx.filters
          ? "No images match these tags."
          : ctx.rated === "no"
            ? "Nothing left to rate: every stored image has your rating."
            : "No ratings yet."
        : "This page is past the end of the list.";
    grid.replaceWith(
      emptyState(text, reply.total > 0 ? h("a", { class: "button", href: libraryHash(ctx) }, "Go to page 1") : null),
    );
    return;
  }
  status.textContent = "";
  status.hidden = true;
  grid.append(...reply.images.map((item) => tile(item, ctx)));
  grid.after(pager(ctx, page, reply.max_page, reply.total));
}
