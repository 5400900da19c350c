// Albums: the user's albums newest first (the original's montage posts
// among them), each with its cover; "New album" names one and picks its
// images from the library as a grid.

import { api, describe, query } from "../lib/api.js";
import { emptyState, h, mount, plural } from "../lib/dom.js";
import { albumHash, albumsHash, albumTitle } from "../lib/albums.js";
import { THUMB_SIZE } from "../lib/listing.js";
import { go, isCurrent } from "../lib/router.js";
import { session } from "../lib/session.js";
import { imagePicker } from "../widgets/imagepicker.js";

const PAGE = 24;

function card(album) {
  const cover = album.cover
    ? h("img", { src: `getthumbnail?${query({ image: album.cover, size: THUMB_SIZE })}`, alt: "", decoding: "async" })
    : h("span", { class: "nocover" }, "empty");
  return h(
    "li",
    { class: "tile album", dataset: { album: album.id } },
    h(
      "a",
      { href: albumHash(album.id), "aria-label": `${albumTitle(album)}, ${plural(album.image_count, "image")}` },
      cover,
      h("span", { class: "badge" }, String(album.image_count)),
    ),
    h("div", { class: "caption" }, h("strong", {}, albumTitle(album)), h("small", { class: "muted" }, album.created_at.slice(0, 10))),
  );
}

function newAlbum() {
  const name = h("input", { type: "text", id: "new-album-name", maxlength: 200, placeholder: "Name (optional)", autocomplete: "off" });
  const message = h("p", { id: "new-album-message", class: "error", role: "alert" });
  const create = async (images) => {
    try {
      const album = await api("albums", {
        method: "POST",
        json: { user: session.user, name: name.value.trim(), images: images.join(",") },
      });
      go(albumHash(album.id));
    } catch (error) {
      message.textContent = describe(error);
    }
  };
  return h(
    "section",
    { class: "card", id: "new-album", "aria-label": "New album" },
    h("h2", {}, "New album"),
    h("label", {}, "Name", name),
    h("p", { class: "muted" }, "Pick its images (click to pick, again to drop), then create it."),
    message,
    imagePicker({ id: "new-album-picker", label: (n) => `Create album with ${plural(n, "image")}`, action: create }),
  );
}

export async function render({ params, token }) {
  const page = Math.max(1, parseInt(params.get("page") || "1", 10) || 1);
  const toggle = h("button", { type: "button", id: "new-album-toggle", class: "primary" }, "New album");
  const slot = h("div", {});
  const status = h("p", { class: "muted", id: "albums-status", "aria-live": "polite" }, "Loading…");
  const grid = h("ul", { class: "grid albums", id: "albums", "aria-label": "Albums" });
  toggle.addEventListener("click", () => {
    if (slot.firstChild) slot.replaceChildren();
    else slot.replaceChildren(newAlbum());
    toggle.setAttribute("aria-expanded", String(Boolean(slot.firstChild)));
  });
  mount(h("div", { class: "titlebar" }, h("h1", {}, "Albums"), toggle), slot, status, grid);
  let reply;
  try {
    reply = await api("albums", { params: { user: session.user, page, limit: PAGE } });
  } catch (error) {
    if (isCurrent(token)) status.textContent = describe(error);
    return;
  }
  if (!isCurrent(token)) return;
  if (!reply.albums.length) {
    status.remove();
    grid.replaceWith(
      reply.total
        ? emptyState("This page is past the end of the list.", h("a", { class: "button", href: albumsHash() }, "Go to page 1"))
        : emptyState("No albums yet. Make one with New album, or from an image with Add to album."),
    );
    return;
  }
  status.textContent = `${plural(reply.total, "album")}, newest first`;
  grid.append(...reply.albums.map(card));
  if (reply.max_page > 1) {
    const link = (p, text, id) =>
      p >= 1 && p <= reply.max_page && p !== page
        ? h("a", { class: "button", href: albumsHash(p), id }, text)
        : h("button", { type: "button", disabled: true, id }, text);
    grid.after(
      h("nav", { class: "pager", "aria-label": "Pages" }, link(page - 1, "‹ Previous", "albums-prev"),
        h("span", {}, `Page ${page} of ${reply.max_page}`), link(page + 1, "Next ›", "albums-next")),
    );
  }
}
