// Rate next: the viewer walking /getratenext's queue -- the unrated images
// whose ratings teach the user's model the most -- rated with keys 1-7,
// each rating moving on to the next. The queue is fetched again when it
// runs out and whenever the model changed (the trainer retrains by itself
// after every 10 ratings), so it always follows the newest model.

import { api, describe, query } from "../lib/api.js";
import { h, mount } from "../lib/dom.js";
import { fmt, LEVELS } from "../lib/format.js";
import { forgetListings, imageHash, VIEW_SIZE } from "../lib/listing.js";
import { isCurrent, setKeys } from "../lib/router.js";
import { session } from "../lib/session.js";
import { modelFreshness } from "../widgets/versions.js";
import { whyPanel } from "../widgets/why.js";

const QUEUE = 20;

export async function render({ token }) {
  const stage = h("div", { class: "stage" }, h("p", { class: "muted" }, "Loading…"));
  const side = h("section", { class: "side", "aria-label": "Rate next" });
  const message = h("p", { id: "ratenext-message", "aria-live": "polite", class: "muted" });
  let queue = [];
  let strategy = "";
  let rated = 0;
  let stale = false;

  const refill = async () => {
    const reply = await api("getratenext", { params: { user: session.user, limit: QUEUE } });
    queue = reply.images;
    strategy = reply.strategy;
    stale = false;
  };
  const freshness = modelFreshness(token, () => {
    stale = true; // a new model: the rest of the queue was chosen for the old one
    message.textContent = "Your model was retrained; the queue follows it from the next image.";
  });

  const show = () => {
    const item = queue[0];
    if (!item) {
      stage.replaceChildren(h("p", { class: "empty" }, "Nothing left to rate: every image with features is rated."));
      side.replaceChildren(freshness, message);
      return;
    }
    stage.replaceChildren(
      h("img", { id: "ratenext-image", src: `getimage?${query({ image: item.image, size: VIEW_SIZE })}`, alt: `Image ${item.image}` }),
    );
    side.replaceChildren(
      h("p", { id: "ratenext-reason" }, item.reason, strategy ? h("small", { class: "muted" }, ` (${strategy})`) : ""),
      h("p", {}, "Predicted ", h("strong", { id: "ratenext-predicted" }, item.predicted === null ? "no model yet" : fmt(item.predicted))),
      h(
        "div",
        { class: "levels", role: "group", "aria-label": "Rate this image (keys 1 to 7)" },
        ...LEVELS.map((value, k) =>
          h("button", { type: "button", class: "level", dataset: { level: k + 1 }, onclick: () => rate(k) }, String(k + 1)),
        ),
      ),
      message,
      h("p", { id: "ratenext-count", class: "muted" }, `${rated} rated in this session.`),
      item.predicted === null ? null : whyPanel(item.image),
      freshness,
      h("p", { class: "keys" }, h("kbd", {}, "1"), "–", h("kbd", {}, "7"), " rate and go on"),
      h("a", { href: imageHash(item.image, {}), id: "ratenext-open" }, "Open in the viewer"),
    );
    if (queue[1]) new Image().src = `getimage?${query({ image: queue[1].image, size: VIEW_SIZE })}`;
  };

  async function rate(k) {
    const item = queue[0];
    if (!item) return;
    try {
      await api("updaterating", { method: "POST", json: { image: item.image, user: session.user, rating: LEVELS[k] } });
      if (!isCurrent(token)) return;
      rated += 1;
      forgetListings();
      queue.shift();
      if (stale || !queue.length) await refill();
      if (!isCurrent(token)) return;
      message.textContent = `Rated ${fmt(LEVELS[k])}.`;
      show();
    } catch (error) {
      message.textContent = describe(error);
    }
  }

  mount(h("h1", {}, "Rate next"), h("div", { class: "viewer" }, stage, side));
  try {
    await refill();
  } catch (error) {
    if (!isCurrent(token)) return;
    stage.replaceChildren(h("p", { class: "error", role: "alert" }, describe(error)));
    return;
  }
  if (!isCurrent(token)) return;
  show();
  setKeys((event) => {
    if (event.key >= "1" && event.key <= "7") rate(Number(event.key) - 1);
    else return;
    event.preventDefault();
  });
}
