// Duplicates (admins): the near-duplicate groups the server found, one at a
// time, side by side with size, resolution and file name. Keys: ← keep the
// left one, → keep the right one (the others are deleted after their
// ratings and album places move onto it), N: not duplicates.

import { api, describe, query } from "../lib/api.js";
import { emptyState, h, mount, plural } from "../lib/dom.js";
import { go, isCurrent, setKeys } from "../lib/router.js";

const VIEW = 480;

const kib = (bytes) => (bytes >= 1 << 20 ? `${(bytes / (1 << 20)).toFixed(1)} MiB` : `${Math.ceil(bytes / 1024)} KiB`);

function card(image, side, key) {
  return h(
    "figure",
    { class: "dup-card", dataset: { image: image.image, side } },
    h("img", { src: `getimage?${query({ image: image.image, size: VIEW })}`, alt: image.original_name || image.image }),
    h(
      "figcaption",
      {},
      h("div", {}, h("strong", {}, `${side} `), h("kbd", {}, key)),
      h("div", {}, `${image.width} × ${image.height} px · ${kib(image.bytes)}`),
      h("div", { class: "muted" }, image.original_name || "(no file name)"),
      h("div", { class: "muted mono" }, `${image.image.slice(0, 16)}…`),
    ),
  );
}

export async function render({ token }) {
  const status = h("p", { class: "muted", id: "dup-status", "aria-live": "polite" }, "Loading…");
  mount(h("h1", {}, "Duplicates"), status);
  let reply;
  try {
    reply = await api("getduplicates", { params: { page: 1, limit: 1 } });
  } catch (error) {
    if (isCurrent(token)) status.textContent = describe(error);
    return;
  }
  if (!isCurrent(token)) return;
  const pending = reply.pending ? ` (${plural(reply.pending, "image")} still being compared)` : "";
  if (reply.groups.length === 0) {
    mount(h("h1", {}, "Duplicates"), emptyState(`No near-duplicates to review${pending}.`));
    return;
  }
  const [group] = reply.groups;
  const [left, right, ...more] = group.images;
  const message = h("p", { id: "dup-message", "aria-live": "polite" });
  const names = group.images.map((i) => i.image);

  async function keep(kept) {
    message.textContent = "Resolving…";
    try {
      await api("resolveduplicates", {
        method: "POST",
        json: { keep: kept.image, remove: names.filter((n) => n !== kept.image) },
      });
      if (isCurrent(token)) go("#/duplicates", true);
    } catch (error) {
      message.textContent = describe(error);
    }
  }

  async function apart() {
    message.textContent = "Recording…";
    try {
      await api("resolveduplicates", { method: "POST", json: { not_duplicates: names } });
      if (isCurrent(token)) go("#/duplicates", true);
    } catch (error) {
      message.textContent = describe(error);
    }
  }

  mount(
    h("h1", {}, "Duplicates"),
    h("p", { id: "dup-progress" }, `${plural(reply.total, "group")} to review${pending}; similarity ${group.similarity.toFixed(3)}`),
    h("div", { class: "dup-pair" }, card(left, "Left", "←"), card(right, "Right", "→")),
    more.length ? h("p", { class: "muted" }, `and ${plural(more.length, "more image")} in this group (removed when you keep one)`) : null,
    h(
      "div",
      { class: "navrow" },
      h("button", { type: "button", id: "keep-left", onclick: () => keep(left) }, "Keep left (←)"),
      h("button", { type: "button", id: "not-duplicates", onclick: apart }, "Not duplicates (N)"),
      h("button", { type: "button", id: "keep-right", onclick: () => keep(right) }, "Keep right (→)"),
    ),
    message,
  );
  setKeys((event) => {
    if (event.key === "ArrowLeft") keep(left);
    else if (event.key === "ArrowRight") keep(right);
    else if (event.key === "n" || event.key === "N") apart();
    else return;
    event.preventDefault();
  });
}
