// The viewer: one image large, its rating buttons (keys 1-7), tags, and
// previous/next within the list it was opened from.

import { api, describe, isNotFound, query } from "../lib/api.js";
import { h, mount } from "../lib/dom.js";
import { fmt, LEVELS, levelOf } from "../lib/format.js";
import {
  BROWSE_ALL,
  forgetListings,
  imageHash,
  libraryHash,
  listContext,
  listingPage,
  pageOf,
  VIEW_SIZE,
} from "../lib/listing.js";
import { go, isCurrent, setKeys } from "../lib/router.js";
import { session } from "../lib/session.js";
import { albumHash, locateInAlbum } from "../lib/albums.js";
import { albumPicker } from "../widgets/albumpicker.js";
import { tagEditor } from "../widgets/tagedit.js";

const ADVANCE_KEY = "tagrate.advance";

async function locate(name, ctx) {
  // Where the image stands in the current list; an image outside it (just
  // uploaded, or rated out of a "not rated" list) is found in the whole collection.
  for (const candidate of [ctx, BROWSE_ALL]) {
    try {
      const where = await api("getimageneighbours", { params: { image: name, user: session.user, ...candidate } });
      const items = await listingPage(candidate, pageOf(where.position));
      return { where, item: items.find((i) => i.image === name) || null, ctx: candidate };
    } catch (error) {
      if (!isNotFound(error)) throw error;
    }
  }
  return { where: null, item: null, ctx };
}

function ratingButtons(current, onRate) {
  const level = levelOf(current);
  return h(
    "div",
    { class: "levels", role: "group", "aria-label": "Rate this image (keys 1 to 7)" },
    ...LEVELS.map((value, k) =>
      h(
        "button",
        {
          type: "button",
          class: "level",
          dataset: { level: k + 1 },
          title: `Rate ${fmt(value)} (key ${k + 1})`,
          "aria-pressed": level === k && Math.abs(current - value) < 1e-6 ? "true" : "false",
          onclick: () => onRate(k),
        },
        String(k + 1),
      ),
    ),
  );
}

/** The admin's "Delete image…" with its confirmation; ``deleted`` runs after the image is gone. */
function deleteControls(name, message, deleted) {
  const area = h("div", { class: "navrow" });
  const ask = h("button", { type: "button", class: "danger", id: "delete-image" }, "Delete image…");
  ask.addEventListener("click", () => {
    const confirm = h("button", { type: "button", class: "danger", id: "confirm-delete" }, "Delete for everyone");
    const cancel = h("button", { type: "button", id: "cancel-delete" }, "Cancel");
    confirm.addEventListener("click", async () => {
      try {
        await api("deleteimage", { method: "POST", form: { image: name } });
        forgetListings();
        deleted();
      } catch (error) {
        message.textContent = describe(error);
      }
    });
    cancel.addEventListener("click", () => area.replaceChildren(ask));
    area.replaceChildren(h("span", {}, "This removes the image, its tags and every user's rating of it."), confirm, cancel);
    cancel.focus();
  });
  area.append(ask);
  return area;
}

export async function render({ arg: name, params, token }) {
  const ctx = listContext(params);
  const album = params.get("album"); // opened from an album: step through it in its order
  mount(h("p", { class: "muted" }, "Loading…"));
  let located;
  let tags;
  try {
    [located, tags] = await Promise.all([
      album ? locateInAlbum(album, name) : locate(name, ctx),
      api("getimagetags", { params: { image: name, scores: "true" } }),
    ]);
  } catch (error) {
    if (!isCurrent(token)) return;
    mount(
      h("h1", {}, "Image"),
      h("p", { class: "error", role: "alert" }, describe(error)),
      h("a", { class: "button", href: libraryHash(ctx) }, "Back to the library"),
    );
    return;
  }
  if (!isCurrent(token)) return;
  const { where, item } = located;
  let rating = item ? item.rating : null;
  const predicted = item ? item.predicted : undefined;
  const prev = where && where.prev_image.image;
  const next = where && where.next_image.image;
  const inList = where && (album || located.ctx === ctx);
  const navCtx = located.ctx;
  const back = album ? albumHash(album) : libraryHash(ctx, where && inList ? pageOf(where.position) : 1);

  const img = h("img", {
    id: "viewer-image",
    src: `getimage?${query({ image: name, size: VIEW_SIZE })}`,
    alt: `Image ${name}`,
  });
  const ratingValue = h("div", { class: "value", id: "my-rating" }, fmt(rating));
  const scores = h(
    "div",
    { class: "scores" },
    h("div", { class: "score" }, h("div", { class: "muted" }, "Your rating"), ratingValue),
    predicted === undefined
      ? null
      : h(
          "div",
          { class: "score pred" },
          h("div", { class: "muted" }, "Predicted"),
          h(
            "div",
            { class: predicted === null ? "value none" : "value", id: "predicted" },
            predicted === null ? "no model yet" : fmt(predicted),
          ),
        ),
  );
  const message = h("p", { id: "viewer-message", "aria-live": "polite", class: "muted" });
  const levels = h("div", {});
  const removeButton = h("button", { type: "button", id: "remove-rating", onclick: () => removeRating() }, "Remove rating");
  const advance = h("input", { type: "checkbox", id: "advance", checked: localStorage.getItem(ADVANCE_KEY) === "1" });
  advance.addEventListener("change", () => localStorage.setItem(ADVANCE_KEY, advance.checked ? "1" : "0"));

  const show = () => {
    ratingValue.textContent = fmt(rating);
    levels.replaceChildren(ratingButtons(rating, rate));
    removeButton.disabled = rating === null;
  };

  async function rate(k) {
    const value = LEVELS[k];
    try {
      await api("updaterating", { method: "POST", json: { image: name, user: session.user, rating: value } });
      if (!isCurrent(token)) return;
      rating = value;
      forgetListings();
      message.textContent = `Rated ${fmt(value)}.`;
      show();
      if (advance.checked && next) go(imageHash(next, navCtx));
    } catch (error) {
      message.textContent = describe(error);
    }
  }

  async function removeRating() {
    if (rating === null) return;
    try {
      await api("removerating", { method: "POST", form: { image: name, user: session.user } });
      if (!isCurrent(token)) return;
      rating = null;
      forgetListings();
      message.textContent = "Rating removed.";
      show();
    } catch (error) {
      message.textContent = describe(error);
    }
  }

  const editor = tagEditor(name, (tag) => libraryHash({ ...ctx, filters: tag }));
  const afterDelete = () =>
    go(next ? imageHash(next, navCtx) : prev ? imageHash(prev, navCtx) : libraryHash(ctx), true);
  const navLink = (target, text, id, key) =>
    target
      ? h("a", { class: "button", id, href: imageHash(target, navCtx), "aria-keyshortcuts": key }, text)
      : h("button", { type: "button", id, disabled: true }, text);
  const position = where
    ? `${where.position} of ${where.max_image}${inList ? "" : " in the whole collection"}`
    : "not in this list";

  mount(
    h(
      "div",
      { class: "viewer" },
      h("div", { class: "stage" }, img),
      h(
        "section",
        { class: "side", "aria-label": "Rating and tags" },
        h(
          "div",
          { class: "navrow" },
          navLink(prev, "← Previous", "prev-image", "ArrowLeft"),
          h("span", { id: "position" }, position),
          navLink(next, "Next →", "next-image", "ArrowRight"),
        ),
        scores,
        levels,
        h("div", { class: "navrow" }, removeButton, h("label", { class: "inline" }, h("span", {}, "Next image after rating"), advance)),
        message,
        h("h2", {}, "Tags"),
        editor.element,
        tags.source ? h("p", { class: "muted" }, "Source: ", tags.source) : null,
        albumPicker(() => [name]),
        session.admin ? deleteControls(name, message, afterDelete) : null,
        h("p", { class: "keys" }, h("kbd", {}, "1"), "–", h("kbd", {}, "7"), " rate · ", h("kbd", {}, "0"), " remove · ",
          h("kbd", {}, "←"), h("kbd", {}, "→"), " previous/next · ", h("kbd", {}, "Esc"), " back to the list · ",
          h("kbd", {}, "t"), " add tags · ", h("kbd", {}, "a"), "/", h("kbd", {}, "r"), " accept/reject a suggestion"),
        h("a", { href: back, id: "back" }, "Back to the list"),
      ),
    ),
  );
  show();
  // The next image is usually wanted soon: fetch it into the cache now.
  if (next) new Image().src = `getimage?${query({ image: next, size: VIEW_SIZE })}`;

  setKeys((event) => {
    if (editor.onKey(event)) event.preventDefault();
    else if (event.key >= "1" && event.key <= "7") rate(Number(event.key) - 1);
    else if (event.key === "0") removeRating();
    else if (event.key === "ArrowLeft" && prev) go(imageHash(prev, navCtx));
    else if (event.key === "ArrowRight" && next) go(imageHash(next, navCtx));
    else if (event.key === "Escape") go(back);
    else return;
    event.preventDefault();
  });
}
