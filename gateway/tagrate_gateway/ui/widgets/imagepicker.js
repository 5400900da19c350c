// Picking images from the library as a grid: one page of the user's whole
// collection at a time (newest first), a click toggles a tile, the picked
// names survive paging; ``action`` gets them when the button is pressed.

import { api, describe, query } from "../lib/api.js";
import { h, plural } from "../lib/dom.js";
import { THUMB_SIZE } from "../lib/listing.js";
import { session } from "../lib/session.js";

const PAGE = 60;

export function imagePicker({ label, action, id = "picker" }) {
  const picked = new Set();
  const grid = h("ul", { class: "grid pickgrid", id: `${id}-grid`, "aria-label": "Images to pick from" });
  const count = h("span", { id: `${id}-count`, "aria-live": "polite" });
  const go = h("button", { type: "button", class: "primary", id: `${id}-go` });
  const status = h("p", { class: "muted", id: `${id}-status` });
  const pages = h("div", { class: "pager" });
  let page = 1;

  const refresh = () => {
    count.textContent = `${plural(picked.size, "image")} picked`;
    go.textContent = label(picked.size);
    for (const tile of grid.querySelectorAll(".tile")) {
      tile.querySelector("button").setAttribute("aria-pressed", String(picked.has(tile.dataset.image)));
    }
  };
  const tile = (item) =>
    h(
      "li",
      { class: "tile pick", dataset: { image: item.image } },
      h(
        "button",
        {
          type: "button",
          "aria-pressed": "false",
          "aria-label": `Pick ${item.image.slice(0, 12)}…`,
          onclick: () => {
            if (picked.has(item.image)) picked.delete(item.image);
            else picked.add(item.image);
            refresh();
          },
        },
        h("img", { src: `getthumbnail?${query({ image: item.image, size: THUMB_SIZE })}`, alt: "", decoding: "async" }),
      ),
    );
  async function load() {
    status.textContent = "Loading…";
    try {
      const reply = await api("getuserdata", {
        params: { user: session.user, rated: "all", sort: "date-desc", page, limit: PAGE },
      });
      grid.replaceChildren(...reply.images.map(tile));
      status.textContent = reply.total ? "" : "No images are stored yet.";
      const link = (p, text) =>
        h("button", { type: "button", disabled: p < 1 || p > reply.max_page || p === page, onclick: () => ((page = p), load()) }, text);
      pages.replaceChildren(link(page - 1, "‹ Previous"), h("span", {}, `Page ${page} of ${reply.max_page}`), link(page + 1, "Next ›"));
      refresh();
    } catch (error) {
      status.textContent = describe(error);
    }
  }
  go.addEventListener("click", async () => {
    go.disabled = true;
    try {
      await action([...picked]);
    } finally {
      go.disabled = false;
    }
  });
  load();
  return h("section", { class: "picker", id, "aria-label": "Pick images" }, h("div", { class: "row" }, count, go), status, grid, pages);
}
