// The viewer: one image large (click or Z to zoom, F full screen, O the
// original file), its rank buttons F..SS (keys 1-7), tags (a click toggles
// the tag in the list's filter), and previous/next within the list it was
// opened from (←/→, or a swipe on a phone).

import { api, describe, isNotFound, query } from "../lib/api.js";
import { h, mount } from "../lib/dom.js";
import { LEVELS, levelOf, rankOf, rankTitle, RANKS } from "../lib/format.js";
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
import { retryBox } from "../lib/retry.js";
import { go, isCurrent, setKeys } from "../lib/router.js";
import { session } from "../lib/session.js";
import { albumHash, locateInAlbum } from "../lib/albums.js";
import { toast } from "../lib/toast.js";
import { albumPicker } from "../widgets/albumpicker.js";
import { whyPanel } from "../widgets/why.js";
import { similarStrip } from "../widgets/similar.js";
import { tagEditor } from "../widgets/tagedit.js";
import { hasTag, toggleTag } from "../widgets/tagbox.js";

const SWIPE_PX = 60;

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
  // A stored value between levels (a decimal from the CLI) presses its nearest rank.
  const level = levelOf(current);
  return h(
    "div",
    { class: "levels", role: "group", "aria-label": "Rate this image (keys 1 to 7)" },
    ...RANKS.map((rank, k) =>
      h(
        "button",
        {
          type: "button",
          class: "level",
          dataset: { level: k + 1, rank: k },
          title: `Rate ${rank} (key ${k + 1})`,
          "aria-pressed": level === k ? "true" : "false",
          onclick: () => onRate(k),
        },
        rank,
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
        toast("Image deleted.");
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
      isNotFound(error) ? h("p", { class: "error", role: "alert" }, describe(error)) : retryBox(error, token),
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
  const ratingValue = h("div", { class: "value", id: "my-rating" });
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
            {
              class: predicted === null ? "value none" : "value",
              id: "predicted",
              title: predicted === null ? null : rankTitle(predicted),
            },
            predicted === null ? "no model yet" : `≈ ${rankOf(predicted)}`,
          ),
        ),
  );
  const message = h("p", { id: "viewer-message", "aria-live": "polite", class: "muted" });
  const levels = h("div", {});
  const removeButton = h("button", { type: "button", id: "remove-rating", onclick: () => removeRating() }, "Remove rating");
  const advance = h("input", { type: "checkbox", id: "advance", checked: localStorage.getItem(ADVANCE_KEY) === "1" });
  advance.addEventListener("change", () => localStorage.setItem(ADVANCE_KEY, advance.checked ? "1" : "0"));

  const show = () => {
    // The nearest rank, in its colour; the exact stored value on hover.
    ratingValue.textContent = rankOf(rating);
    ratingValue.title = rankTitle(rating);
    if (rating === null) delete ratingValue.dataset.rank;
    else ratingValue.dataset.rank = String(levelOf(rating));
    ratingValue.classList.toggle("rank", rating !== null);
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
      message.textContent = `Rated ${RANKS[k]}.`;
      toast(`Saved: ${RANKS[k]}.`);
      show();
      if (advance.checked && next) go(imageHash(next, navCtx));
    } catch (error) {
      message.textContent = describe(error);
      toast(`Not saved: ${describe(error)}`, "error");
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
      toast("Rating removed.");
      show();
    } catch (error) {
      message.textContent = describe(error);
      toast(`Not removed: ${describe(error)}`, "error");
    }
  }

  const stage = h("div", { class: "stage", id: "stage" }, img);
  const zoom = () => {
    stage.classList.toggle("zoomed");
    zoomButton.setAttribute("aria-pressed", String(stage.classList.contains("zoomed")));
  };
  const fullScreen = () => {
    if (document.fullscreenElement) document.exitFullscreen();
    else if (stage.requestFullscreen) stage.requestFullscreen().catch(() => toast("Full screen is not available here.", "error"));
  };
  const original = `getimage?${query({ image: name })}`;
  const zoomButton = h("button", { type: "button", id: "zoom", "aria-pressed": "false", "aria-keyshortcuts": "Z", onclick: zoom }, "Zoom");
  const tools = h(
    "div",
    { class: "navrow", id: "image-tools" },
    zoomButton,
    h("button", { type: "button", id: "fullscreen", "aria-keyshortcuts": "F", onclick: fullScreen }, "Full screen"),
    h("a", { class: "button", id: "open-original", href: original, target: "_blank", rel: "noopener" }, "Open original"),
  );
  img.addEventListener("click", zoom);
  // A swipe on a phone: left for the next image, right for the previous (not while zoomed: that pans).
  let touch = null;
  stage.addEventListener("touchstart", (event) => {
    touch = event.touches.length === 1 ? { x: event.touches[0].clientX, y: event.touches[0].clientY } : null;
  }, { passive: true });
  stage.addEventListener("touchend", (event) => {
    if (!touch || stage.classList.contains("zoomed")) return;
    const dx = event.changedTouches[0].clientX - touch.x;
    const dy = event.changedTouches[0].clientY - touch.y;
    touch = null;
    if (Math.abs(dx) < SWIPE_PX || Math.abs(dx) < 1.5 * Math.abs(dy)) return;
    const target = dx < 0 ? next : prev;
    if (target) go(imageHash(target, navCtx));
  });

  // One tag list: a click toggles the tag in the list's filter; anyone who
  // may use the collection may tag it (tags are shared, as on a booru).
  const editor = tagEditor(
    name,
    (tag) => libraryHash({ ...ctx, filters: toggleTag(ctx.filters, tag) }),
    (tag) => hasTag(ctx.filters, tag),
    !session.auth || Boolean(session.user || session.admin),
  );
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
      stage,
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
        tools,
        scores,
        predicted === null || predicted === undefined ? null : whyPanel(name),
        levels,
        h("div", { class: "navrow" }, removeButton, h("label", { class: "inline" }, h("span", {}, "Next image after rating"), advance)),
        message,
        h("h2", {}, "Tags"),
        editor.element,
        tags.original_name ? h("p", { class: "muted" }, "File: ", h("span", { id: "original-name" }, tags.original_name)) : null,
        tags.source ? h("p", { class: "muted" }, "Source: ", tags.source) : null,
        albumPicker(() => [name]),
        session.admin ? deleteControls(name, message, afterDelete) : null,
        h("p", { class: "keys" }, h("kbd", {}, "1"), "–", h("kbd", {}, "7"), " rate · ", h("kbd", {}, "0"), " remove · ",
          h("kbd", {}, "←"), h("kbd", {}, "→"), " previous/next · ", h("kbd", {}, "Z"), " zoom · ", h("kbd", {}, "F"),
          " full screen · ", h("kbd", {}, "O"), " original · ", h("kbd", {}, "Esc"), " back to the list · ",
          h("kbd", {}, "t"), " add tags · ", h("kbd", {}, "a"), "/", h("kbd", {}, "r"), " accept/reject a suggestion"),
        h("a", { href: back, id: "back" }, "Back to the list"),
      ),
      similarStrip(name, navCtx),
    ),
  );
  show();
  // The next image is usually wanted soon: fetch it into the cache now.
  if (next) new Image().src = `getimage?${query({ image: next, size: VIEW_SIZE })}`;

  setKeys((event) => {
    if (editor.onKey(event)) {
      event.preventDefault();
      return;
    }
    if (event.key >= "1" && event.key <= "7") rate(Number(event.key) - 1);
    else if (event.key === "0") removeRating();
    else if (event.key === "ArrowLeft" && prev) go(imageHash(prev, navCtx));
    else if (event.key === "ArrowRight" && next) go(imageHash(next, navCtx));
    else if (event.key === "Escape" && document.fullscreenElement) document.exitFullscreen();
    else if (event.key === "Escape") go(back);
    else if (event.key === "z" || event.key === "Z") zoom();
    else if (event.key === "f" || event.key === "F") fullScreen();
    else if (event.key === "o" || event.key === "O") window.open(original, "_blank", "noopener");
    else return;
    event.preventDefault();
  });
}
