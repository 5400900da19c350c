// One album as a grid, in album order: open an image to step through the
// album with the viewer's keys (← → rate, Esc back here); move a tile
// earlier or later, take it out, add images picked from the library,
// rename or delete the album.

import { api, describe, isNotFound, query } from "../lib/api.js";
import { emptyState, h, mount, plural } from "../lib/dom.js";
import { levelOf, rankOf, rankTitle } from "../lib/format.js";
import { ALBUM_PAGE_SIZE, albumHash, albumImageHash, albumPath, albumsHash, albumTitle } from "../lib/albums.js";
import { THUMB_SIZE } from "../lib/listing.js";
import { go, isCurrent, setKeys } from "../lib/router.js";
import { imagePicker } from "../widgets/imagepicker.js";
import { pager } from "../widgets/pager.js";

// Shows this screen again with what the server now holds.
const reload = () => go(location.hash);

function tile(item, album, act) {
  const src = `getthumbnail?${query({ image: item.image, size: THUMB_SIZE })}`;
  const badge =
    item.rating === null || item.rating === undefined
      ? null
      : h("span", { class: "badge rank", dataset: { rank: levelOf(item.rating) }, title: rankTitle(item.rating) }, rankOf(item.rating));
  const button = (text, label, id, onclick, disabled = false) =>
    h("button", { type: "button", class: id, title: label, "aria-label": `${label}: image ${item.position}`, disabled, onclick }, text);
  return h(
    "li",
    { class: "tile", dataset: { image: item.image, position: item.position } },
    h(
      "a",
      { href: albumImageHash(item.image, album.id), "aria-label": `Image ${item.position} of ${album.image_count}` },
      h("img", { src, alt: "", width: THUMB_SIZE, height: THUMB_SIZE, decoding: "async" }),
      badge,
    ),
    h(
      "div",
      { class: "tileactions" },
      button("◀", "Move earlier", "move-earlier", () => act.move(item, item.position - 1), item.position === 1),
      button("▶", "Move later", "move-later", () => act.move(item, item.position + 1), item.position === album.image_count),
      button("✕", "Remove from album", "remove-from-album", () => act.remove(item)),
    ),
  );
}

function titleControls(album, message) {
  const name = h("input", { type: "text", id: "album-name", value: album.name, maxlength: 200, placeholder: "Untitled", "aria-label": "Album name" });
  const save = h("button", { type: "submit", id: "rename-album" }, "Rename");
  const form = h("form", { class: "row", id: "rename-form" }, name, save);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api(albumPath(album.id), { method: "PATCH", json: { name: name.value.trim() } });
      reload();
    } catch (error) {
      message.textContent = describe(error);
    }
  });
  const del = h("button", { type: "button", class: "danger", id: "delete-album" }, "Delete album…");
  const area = h("div", { class: "navrow" }, del);
  del.addEventListener("click", () => {
    const yes = h("button", { type: "button", class: "danger", id: "confirm-delete-album" }, "Delete the album");
    const no = h("button", { type: "button", onclick: () => area.replaceChildren(del) }, "Cancel");
    yes.addEventListener("click", async () => {
      try {
        await api(albumPath(album.id), { method: "DELETE" });
        go(albumsHash(), true);
      } catch (error) {
        message.textContent = describe(error);
      }
    });
    area.replaceChildren(h("span", {}, "Its images stay stored."), yes, no);
    no.focus();
  });
  return h("div", { class: "row" }, form, area);
}

function adder(album, message) {
  const slot = h("div", {});
  const toggle = h("button", { type: "button", id: "add-images-toggle" }, "Add images…");
  const add = async (images) => {
    if (!images.length) return;
    try {
      await api(`${albumPath(album.id)}/images`, { method: "POST", json: { images: images.join(",") } });
      reload();
    } catch (error) {
      message.textContent = describe(error);
    }
  };
  toggle.addEventListener("click", () => {
    if (slot.firstChild) slot.replaceChildren();
    else slot.replaceChildren(imagePicker({ id: "add-picker", label: (n) => `Add ${plural(n, "image")}`, action: add }));
  });
  return [toggle, slot];
}

export async function render({ arg, params, token }) {
  if (!arg) return go(albumsHash(), true);
  const page = Math.max(1, parseInt(params.get("page") || "1", 10) || 1);
  mount(h("p", { class: "muted" }, "Loading…"));
  let album;
  try {
    album = await api(albumPath(arg), { params: { page, limit: ALBUM_PAGE_SIZE } });
  } catch (error) {
    if (!isCurrent(token)) return;
    mount(
      h("h1", {}, "Album"),
      h("p", { class: "error", role: "alert" }, isNotFound(error) ? "There is no such album." : describe(error)),
      h("a", { class: "button", href: albumsHash() }, "All albums"),
    );
    return;
  }
  if (!isCurrent(token)) return;
  const message = h("p", { class: "error", id: "album-message", role: "alert" });
  const act = {
    move: async (item, position) => {
      try {
        await api(`${albumPath(album.id)}/images/${encodeURIComponent(item.image)}`, { method: "PATCH", json: { position } });
        go(albumHash(album.id, Math.ceil(position / ALBUM_PAGE_SIZE)), true);
      } catch (error) {
        message.textContent = describe(error);
      }
    },
    remove: async (item) => {
      try {
        await api(`${albumPath(album.id)}/images/${encodeURIComponent(item.image)}`, { method: "DELETE" });
        reload();
      } catch (error) {
        message.textContent = describe(error);
      }
    },
  };
  const [addToggle, addSlot] = adder(album, message);
  const grid = h("ul", { class: "grid", id: "grid", "aria-label": "Images in this album" }, ...album.images.map((i) => tile(i, album, act)));
  const info = `${plural(album.image_count, "image")} · made ${album.created_at.replace("T", " ").replace("Z", " UTC")}`;
  mount(
    h("div", { class: "titlebar" }, h("h1", { id: "album-title" }, albumTitle(album)), addToggle),
    h("p", { class: "muted", id: "album-info" }, info),
    titleControls(album, message),
    message,
    addSlot,
    album.images.length ? grid : emptyState("This album is empty. Add images with Add images…"),
  );
  const maxPage = album.max_page || 1;
  if (maxPage > 1) {
    const hashFor = (p) => albumHash(album.id, p);
    const total = album.image_count;
    grid.before(pager({ hashFor, page, maxPage, total, where: "album-top" }));
    grid.after(pager({ hashFor, page, maxPage, total, where: "album" }));
  }
  setKeys((event) => {
    if (event.key === "Escape") go(albumsHash());
    else return;
    event.preventDefault();
  });
}
