// Finding things by example: the viewer's "More like this" strip
// (/getsimilar for the image shown; each result opens in the viewer with
// the same list context) and search by dropping an image file on the
// library (POST /getsimilar: the file is compared, never stored).

import { api, ApiError, describe, query } from "../lib/api.js";
import { h } from "../lib/dom.js";
import { fmt } from "../lib/format.js";
import { imageHash } from "../lib/listing.js";
import { session } from "../lib/session.js";

const STRIP_SIZE = 12;
const STRIP_THUMB = 120;
const DROP_RESULTS = 24;

function thumbLink(result, ctx, size) {
  const label = `${result.image.slice(0, 12)}…, similarity ${fmt(result.similarity)}`;
  return h(
    "li",
    { class: "tile", dataset: { image: result.image } },
    h(
      "a",
      { href: imageHash(result.image, ctx), "aria-label": label, title: label },
      h("img", { src: `getthumbnail?${query({ image: result.image, size })}`, alt: "", width: size, height: size }),
      result.rating !== null && result.rating !== undefined ? h("span", { class: "badge" }, `★ ${fmt(result.rating)}`) : null,
    ),
  );
}

/** The "More like this" strip for image `name`, filled in when /getsimilar answers. */
export function similarStrip(name, ctx) {
  const list = h("ul", { class: "grid similar-strip", id: "similar-strip", "aria-label": "More like this" });
  const note = h("p", { class: "muted", id: "similar-status", "aria-live": "polite" }, "Looking for similar images…");
  const section = h("section", { class: "similar", "aria-label": "More like this" }, h("h2", {}, "More like this"), note, list);
  api("getsimilar", { params: { image: name, user: session.user, limit: STRIP_SIZE, filters: ctx.filters } })
    .then((reply) => {
      note.textContent = reply.results.length ? "" : "No similar images under these filters.";
      note.hidden = reply.results.length > 0;
      list.append(...reply.results.map((r) => thumbLink(r, ctx, STRIP_THUMB)));
    })
    .catch((error) => {
      note.textContent =
        error instanceof ApiError && error.code === "features_pending"
          ? "Similar images appear once this image has been analysed (in a moment)."
          : describe(error);
    });
  return section;
}

async function searchByFile(file) {
  const body = new FormData();
  body.append("image", file, file.name || "example");
  body.append("limit", String(DROP_RESULTS));
  if (session.user) body.append("user", session.user);
  const response = await fetch("getsimilar", { method: "POST", body, credentials: "same-origin" });
  const reply = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, reply && reply.code, (reply && reply.error) || response.statusText);
  return reply;
}

/** Lets an image file dropped on `target` search the library by example; results go into `panel`. */
export function enableDropSearch(target, panel, ctx) {
  target.addEventListener("dragover", (event) => {
    if (![...event.dataTransfer.types].includes("Files")) return;
    event.preventDefault();
    target.classList.add("dropping");
  });
  target.addEventListener("dragleave", () => target.classList.remove("dropping"));
  target.addEventListener("drop", async (event) => {
    const file = event.dataTransfer.files[0];
    if (!file) return;
    event.preventDefault();
    target.classList.remove("dropping");
    panel.hidden = false;
    panel.replaceChildren(h("p", { class: "muted", "aria-live": "polite" }, `Searching for images like ${file.name}…`));
    try {
      const reply = await searchByFile(file);
      const grid = h("ul", { class: "grid", id: "drop-results", "aria-label": `Images like ${file.name}` });
      grid.append(...reply.results.map((r) => thumbLink(r, { ...ctx, rated: "all" }, 152)));
      panel.replaceChildren(
        h("h2", {}, `Images like ${file.name}`),
        reply.results.length ? grid : h("p", { class: "muted" }, "No stored image is similar."),
        h("button", { type: "button", onclick: () => (panel.hidden = true) }, "Close"),
      );
    } catch (error) {
      panel.replaceChildren(h("p", { class: "error", role: "alert" }, describe(error)));
    }
  });
}

/** The library's hint and result panel for search by example. */
export function dropPanel() {
  return h("section", { id: "drop-search", class: "drop-search", hidden: true, "aria-live": "polite" });
}
