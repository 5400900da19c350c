// "Why?": why the user's model predicts what it does for an image (GET
// /explain): the rated images most like it, with the user's ratings and
// how alike they are, and the image's tags that move predictions most.
// Fetched when the panel is first opened.

import { api, describe, query } from "../lib/api.js";
import { h } from "../lib/dom.js";
import { fmt } from "../lib/format.js";
import { imageHash, THUMB_SIZE } from "../lib/listing.js";
import { session } from "../lib/session.js";

function neighbours(list) {
  if (!list.length) return h("p", { class: "muted" }, "Nothing rated is like it yet.");
  return h(
    "ul",
    { class: "why-neighbours", id: "why-neighbours" },
    ...list.map((n) =>
      h(
        "li",
        {},
        h(
          "a",
          { href: imageHash(n.image, {}), title: `Your rating ${fmt(n.rating)}` },
          h("img", { src: `getthumbnail?${query({ image: n.image, size: THUMB_SIZE })}`, alt: `Rated ${fmt(n.rating)}`, width: 64, height: 64 }),
        ),
        h("span", {}, ` rated ${fmt(n.rating)} · ${Math.round(n.similarity * 100)}% alike`),
      ),
    ),
  );
}

function tags(list) {
  if (!list.length) return h("p", { class: "muted" }, "No tag of this image moves your predictions.");
  return h(
    "ul",
    { class: "tags", id: "why-tags" },
    ...list.map((t) => h("li", {}, `${t.tag} `, h("small", {}, `${t.effect >= 0 ? "+" : "−"}${fmt(Math.abs(t.effect))}`))),
  );
}

/** A collapsed "Why?" panel for ``name``; it asks /explain when opened. */
export function whyPanel(name) {
  const body = h("div", { id: "why-body" }, h("p", { class: "muted" }, "Loading…"));
  const panel = h("details", { class: "why", id: "why" }, h("summary", {}, "Why this prediction?"), body);
  let loaded = false;
  panel.addEventListener("toggle", async () => {
    if (!panel.open || loaded) return;
    loaded = true;
    try {
      const why = await api("explain", { params: { user: session.user, image: name, limit: 6 } });
      body.replaceChildren(
        h("p", {}, `Predicted ${fmt(why.predicted)} by model ${why.model_version}.`),
        h("h3", {}, "Your ratings of the most similar images"),
        neighbours(why.neighbours),
        h("h3", {}, "Its tags that move your predictions"),
        tags(why.tags),
      );
    } catch (error) {
      loaded = false;
      body.replaceChildren(h("p", { class: "muted" }, describe(error)));
    }
  });
  return panel;
}
