// The library: a grid of one page of the user's listing (/getuserdata),
// with the tag box, sort and "show" controls above it, numbered pages
// above and below, and multi-select with bulk actions (rate, remove
// rating, delete, add to album, add or remove tags).
//
// Defaults as people expect them: a user with no ratings sees every stored
// image (rated=all); "For you" shows what they have not rated (with a word
// on what a model needs when there is none yet); an empty filtered view
// offers to reset the filters; a service error retries by itself.

import { api, describe, isNotFound, query } from "../lib/api.js";
import { forEach } from "../lib/bulk.js";
import { emptyState, h, mount, plural } from "../lib/dom.js";
import { LEVELS, levelOf, rankOf, rankTitle, RANKS } from "../lib/format.js";
import {
  cacheListing,
  DEFAULT_SORT,
  fetchPage,
  forgetListings,
  imageHash,
  libraryHash,
  listContext,
  THUMB_SIZE,
} from "../lib/listing.js";
import { retryBox } from "../lib/retry.js";
import { go, isCurrent, setKeys } from "../lib/router.js";
import { session } from "../lib/session.js";
import { toast } from "../lib/toast.js";
import { albumPicker } from "../widgets/albumpicker.js";
import { bulkTags } from "../widgets/bulktags.js";
import { pager } from "../widgets/pager.js";
import { tagBox } from "../widgets/tagbox.js";
import { dropPanel, enableDropSearch } from "../widgets/similar.js";
import { modelFreshness } from "../widgets/versions.js";

// The trainer's default TRAINER_MIN_RATINGS: what the "For you" hint counts
// towards (a training asked for too early says the server's own figure).
const MODEL_MIN_RATINGS = 10;

const SORTS = [
  ["date-desc", "Newest"],
  ["date-asc", "Oldest"],
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
const RESET = "#/library";

// The selection outlives paging and re-renders until cleared or the user changes.
const selection = { on: false, names: new Set(), user: null };
// Users shown every image because they have no ratings: rated=all is their default, not a filter.
const newcomers = new Set();

function controls(ctx) {
  const filter = h("input", {
    type: "search",
    id: "filter",
    name: "filters",
    value: ctx.filters,
    placeholder: "cat, sofa, -dog",
    autocomplete: "off",
    spellcheck: "false",
    "aria-describedby": "filter-help",
  });
  const select = (id, label, options, value) =>
    h(
      "label",
      {},
      label,
      h("select", { id, name: id }, ...options.map(([v, text]) => h("option", { value: v, selected: v === value }, text))),
    );
  // Anything other than this user's default view (a newcomer's is every image).
  const defaultRated = ctx.sort.startsWith("predicted") ? "no" : newcomers.has(session.user) ? "all" : "yes";
  const changed = ctx.filters !== "" || ctx.sort !== DEFAULT_SORT || ctx.rated !== defaultRated;
  const form = h(
    "form",
    { class: "controls", id: "library-controls", role: "search" },
    h("label", { class: "filter" }, "Tags (all of them; -tag excludes)", filter),
    select("sort", "Sort", SORTS, ctx.sort),
    select("rated", "Show", RATED, ctx.rated),
    h("button", { type: "submit", class: "primary" }, "Apply"),
    changed ? h("a", { class: "button", href: RESET, id: "reset-filters" }, "Reset filters") : null,
    h("span", { id: "filter-help", hidden: true }, "Comma-separated tag names; prefix a tag with - to exclude it."),
  );
  tagBox(filter);
  const sortSelect = form.querySelector("#sort");
  const ratedSelect = form.querySelector("#rated");
  let ratedTouched = false;
  ratedSelect.addEventListener("change", () => (ratedTouched = true));
  const apply = () => {
    const data = new FormData(form);
    const filters = String(data.get("filters"))
      .split(",")
      .map((t) => t.trim())
      .filter(Boolean)
      .join(", ");
    go(libraryHash({ filters, sort: data.get("sort"), rated: data.get("rated") }));
  };
  sortSelect.addEventListener("change", () => {
    // "For you" means what you have not seen yet, unless "Show" was chosen too.
    if (sortSelect.value.startsWith("predicted") && !ctx.sort.startsWith("predicted") && !ratedTouched) {
      ratedSelect.value = "no";
    }
    apply();
  });
  ratedSelect.addEventListener("change", apply);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    apply();
  });
  return form;
}

function badge(item) {
  if (item.rating !== null && item.rating !== undefined) {
    return h("span", { class: "badge rank", dataset: { rank: levelOf(item.rating) }, title: rankTitle(item.rating) }, rankOf(item.rating));
  }
  if (item.predicted !== null && item.predicted !== undefined) {
    return h("span", { class: "badge pred", title: `predicted ${rankTitle(item.predicted)}` }, `≈ ${rankOf(item.predicted)}`);
  }
  return null;
}

function tile(item, ctx, onPick) {
  const rated = item.rating !== null && item.rating !== undefined;
  const label = rated ? `rated ${rankTitle(item.rating)}` : item.predicted != null ? `predicted ${rankTitle(item.predicted)}` : "not rated";
  const src = `getthumbnail?${query({ image: item.image, size: THUMB_SIZE })}`;
  const li = h(
    "li",
    { class: "tile", dataset: { image: item.image }, "aria-selected": String(selection.names.has(item.image)) },
    h(
      "a",
      {
        href: imageHash(item.image, ctx),
        "aria-label": `${item.image.slice(0, 12)}…, ${label}`,
        onclick: (event) => {
          if (!selection.on) return;
          event.preventDefault();
          onPick(item.image, li);
        },
      },
      h("img", { src, alt: "", width: THUMB_SIZE, height: THUMB_SIZE, decoding: "async" }),
      h("span", { class: "check", "aria-hidden": "true" }),
      badge(item),
    ),
  );
  return li;
}

/** The "For you" hint when no model predicts for this user yet. */
async function forYouHint(slot, token) {
  let count = 0;
  try {
    count = (await api("getstats", { params: { user: session.user } })).image_count;
  } catch (error) {
    if (!isNotFound(error)) return;
  }
  if (!isCurrent(token)) return;
  const more = Math.max(0, MODEL_MIN_RATINGS - count);
  const train = h("button", { type: "button", class: "primary", id: "hint-train" }, "Train my model");
  train.addEventListener("click", async () => {
    train.disabled = true;
    try {
      await api("trainuser", { method: "POST", form: { user: session.user } });
      toast("Training started: predictions appear when it is done.");
      go("#/model");
    } catch (error) {
      train.disabled = false;
      toast(describe(error), "error");
    }
  });
  slot.replaceChildren(
    h(
      "div",
      { class: "hint", id: "for-you-hint", role: "note" },
      h(
        "p",
        {},
        "No model predicts your taste yet, so this order means nothing so far. ",
        more > 0
          ? `A model needs at least ${MODEL_MIN_RATINGS} ratings: rate ${plural(more, "more image")}, then train it.`
          : `You have ${plural(count, "rating")}: train your model to get predictions.`,
      ),
      more > 0
        ? h("a", { class: "button", href: libraryHash({ filters: "", sort: "date-desc", rated: "no" }), id: "hint-rate" }, "Rate images")
        : train,
    ),
  );
}

function bulkBar(ctx, grid, token, refresh) {
  const count = h("span", { id: "selected-count", "aria-live": "polite" });
  const bar = h("div", { class: "bulkbar", id: "bulk-bar", role: "toolbar", "aria-label": "Selected images" });
  const names = () => [...selection.names];
  const done = (verb, result) => {
    if (result.ok) toast(`${verb} ${plural(result.ok, "image")}.`);
    if (result.failed.length) toast(`${plural(result.failed.length, "image")} failed: ${describe(result.failed[0][1])}`, "error");
    forgetListings();
    selection.names.clear();
    refresh();
  };
  const rate = async (k) => {
    const chosen = names();
    if (!chosen.length) return;
    const result = await forEach(chosen, (image) =>
      api("updaterating", { method: "POST", json: { image, user: session.user, rating: LEVELS[k] } }),
    );
    done(`Rated ${RANKS[k]}:`, result);
  };
  const remove = async () => {
    const chosen = names();
    if (!chosen.length) return;
    const result = await forEach(chosen, (image) => api("removerating", { method: "POST", form: { image, user: session.user } }));
    done("Removed the rating of", result);
  };
  const deleteArea = h("span", { class: "navrow" });
  const askDelete = h("button", { type: "button", class: "danger", id: "bulk-delete" }, "Delete…");
  askDelete.addEventListener("click", () => {
    if (!selection.names.size) return;
    const yes = h("button", { type: "button", class: "danger", id: "bulk-confirm-delete" }, `Delete ${plural(selection.names.size, "image")} for everyone`);
    const no = h("button", { type: "button", onclick: () => deleteArea.replaceChildren(askDelete) }, "Cancel");
    yes.addEventListener("click", async () => {
      const result = await forEach(names(), (image) => api("deleteimage", { method: "POST", form: { image } }));
      done("Deleted", result);
    });
    deleteArea.replaceChildren(yes, no);
    no.focus();
  });
  deleteArea.append(askDelete);
  const update = () => {
    count.textContent = `${plural(selection.names.size, "image")} selected`;
    for (const b of bar.querySelectorAll("button.needs")) b.disabled = selection.names.size === 0;
  };
  bar.append(
    count,
    h("button", { type: "button", id: "select-page", onclick: () => {
      for (const li of grid.querySelectorAll(".tile")) {
        selection.names.add(li.dataset.image);
        li.setAttribute("aria-selected", "true");
      }
      update();
    } }, "Select page"),
    h("button", { type: "button", id: "select-clear", onclick: () => {
      selection.names.clear();
      for (const li of grid.querySelectorAll(".tile")) li.setAttribute("aria-selected", "false");
      update();
    } }, "Clear"),
    h(
      "span",
      { class: "levels", role: "group", "aria-label": "Rate the selected images" },
      ...RANKS.map((rank, k) =>
        h("button", { type: "button", class: "level needs bulk-level", dataset: { level: k + 1, rank: k }, title: `Rate the selection ${rank}`, onclick: () => rate(k) }, rank),
      ),
    ),
    h("button", { type: "button", class: "needs", id: "bulk-remove", onclick: remove }, "Remove rating"),
    session.admin ? deleteArea : null,
    albumPicker(names, { id: "bulk-album" }),
    bulkTags(names, done),
  );
  update();
  return { bar, update };
}

export async function render({ params, token }) {
  const ctx = listContext(params);
  const page = Math.max(1, parseInt(params.get("page") || "1", 10) || 1);
  if (selection.user !== session.user) Object.assign(selection, { on: false, names: new Set(), user: session.user });
  const status = h("p", { class: "muted", id: "library-status", "aria-live": "polite" }, "Loading…");
  const hint = h("div", {});
  const grid = h("ul", { class: "grid", id: "grid", "aria-label": "Images" });
  const selectButton = h("button", { type: "button", id: "select-mode", "aria-pressed": String(selection.on) }, selection.on ? "Done selecting" : "Select");
  // "For you" follows the model: it refreshes by itself when the model changes.
  const fresh = ctx.sort.startsWith("predicted")
    ? [modelFreshness(token, () => {
        forgetListings();
        go(location.hash, true);
      })]
    : [];
  const dropped = dropPanel();
  mount(h("div", { class: "titlebar" }, h("h1", {}, "Library"), selectButton), ...fresh, controls(ctx), hint, dropped, status, grid);
  enableDropSearch(document.querySelector("#main"), dropped, ctx); // search by dropping an image
  let reply;
  try {
    reply = await fetchPage(ctx, page);
  } catch (error) {
    if (!isCurrent(token)) return;
    if (isNotFound(error) && !params.has("rated")) {
      newcomers.add(session.user);
      return go(libraryHash({ ...ctx, rated: "all" }, page), true);
    }
    status.remove();
    grid.replaceWith(
      isNotFound(error)
        ? emptyState(
            `${session.user} has no ratings yet.`,
            h("a", { class: "button", href: libraryHash({ ...ctx, rated: "all" }), id: "show-all" }, "Show the whole library"),
          )
        : retryBox(error, token),
    );
    return;
  }
  if (!isCurrent(token)) return;
  if (reply.total === 0 && !params.has("rated") && ctx.rated === "yes" && !ctx.filters) {
    // No ratings (any more): the library is every stored image.
    newcomers.add(session.user);
    return go(libraryHash({ ...ctx, rated: "all" }, page), true);
  }
  cacheListing(ctx, page, reply.images);
  if (ctx.sort.startsWith("predicted") && reply.images.length && reply.images.every((i) => i.predicted == null)) {
    forYouHint(hint, token);
  }
  if (reply.images.length === 0) {
    status.remove();
    selectButton.hidden = true;
    const reset = h("a", { class: "button", href: RESET, id: "empty-reset" }, "Reset filters");
    const text =
      reply.total > 0
        ? "This page is past the end of the list."
        : ctx.filters
          ? "No images match these tags."
          : ctx.rated === "no"
            ? "Nothing left to rate: every stored image has your rating."
            : ctx.rated === "yes"
              ? "No ratings yet."
              : "No images are stored yet.";
    grid.replaceWith(
      emptyState(
        text,
        reply.total > 0 ? h("a", { class: "button", href: libraryHash(ctx) }, "Go to page 1") : null,
        reply.total === 0 && (ctx.filters || ctx.rated !== "all") ? reset : null,
        reply.total === 0 && !ctx.filters && ctx.rated === "all" ? h("a", { class: "button", href: "#/upload" }, "Upload images") : null,
      ),
    );
    return;
  }
  status.textContent = "";
  status.hidden = true;
  const refresh = () => go(location.hash, true);
  let bulk = null;
  const pick = (name, li) => {
    if (selection.names.has(name)) selection.names.delete(name);
    else selection.names.add(name);
    li.setAttribute("aria-selected", String(selection.names.has(name)));
    bulk.update();
  };
  grid.append(...reply.images.map((item) => tile(item, ctx, pick)));
  bulk = bulkBar(ctx, grid, token, refresh);
  const showSelection = () => {
    grid.classList.toggle("selecting", selection.on);
    bulk.bar.hidden = !selection.on;
    selectButton.setAttribute("aria-pressed", String(selection.on));
    selectButton.textContent = selection.on ? "Done selecting" : "Select";
  };
  selectButton.addEventListener("click", () => {
    selection.on = !selection.on;
    showSelection();
  });
  const hashFor = (p) => libraryHash(ctx, p);
  grid.before(bulk.bar, pager({ hashFor, page, maxPage: reply.max_page, total: reply.total, where: "top" }));
  grid.after(pager({ hashFor, page, maxPage: reply.max_page, total: reply.total }));
  showSelection();
  setKeys((event) => {
    if (event.key === "Escape" && selection.on) {
      selection.on = false;
      showSelection();
    } else if (event.key === "ArrowRight" && page < reply.max_page) go(hashFor(page + 1));
    else if (event.key === "ArrowLeft" && page > 1) go(hashFor(page - 1));
    else return;
    event.preventDefault();
  });
}
