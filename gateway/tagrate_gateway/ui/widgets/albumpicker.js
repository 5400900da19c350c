// "Add to album": puts images into one of the user's albums or a new one.
// Used by the viewer (this image); a grid selection passes its names.

import { api, describe } from "../lib/api.js";
import { h, plural } from "../lib/dom.js";
import { albumHash, albumPath, albumTitle } from "../lib/albums.js";
import { session } from "../lib/session.js";

const NEW = "new";

/** A disclosure with the album choice; ``names()`` gives the images to add. */
export function albumPicker(names, { id = "album-picker" } = {}) {
  const choice = h("select", { id: `${id}-choice`, name: "album" }, h("option", { value: NEW }, "New album…"));
  const title = h("input", { type: "text", id: `${id}-name`, maxlength: 200, placeholder: "Album name", autocomplete: "off" });
  const add = h("button", { type: "button", class: "primary", id: `${id}-add` }, "Add");
  const message = h("span", { class: "muted", id: `${id}-message`, "aria-live": "polite" });
  const panel = h(
    "details",
    { class: "albumpicker", id },
    h("summary", {}, "Add to album…"),
    h("div", { class: "row" }, h("label", {}, "Album", choice), h("label", {}, "Name", title), add),
    message,
  );
  let loaded = false;
  panel.addEventListener("toggle", async () => {
    if (!panel.open || loaded) return;
    loaded = true;
    try {
      const reply = await api("albums", { params: { user: session.user, page: 1, limit: 100 } });
      choice.append(...reply.albums.map((a) => h("option", { value: a.id }, albumTitle(a))));
    } catch (error) {
      message.textContent = describe(error);
    }
  });
  choice.addEventListener("change", () => (title.parentElement.hidden = choice.value !== NEW));
  add.addEventListener("click", async () => {
    const images = names().join(",");
    add.disabled = true;
    try {
      let album;
      if (choice.value === NEW) {
        album = await api("albums", { method: "POST", json: { user: session.user, name: title.value.trim(), images } });
        choice.append(h("option", { value: album.id }, albumTitle(album)));
        choice.value = String(album.id);
        title.parentElement.hidden = true;
      } else {
        album = (await api(`${albumPath(choice.value)}/images`, { method: "POST", json: { images } })).album;
      }
      message.replaceChildren(
        `In ${albumTitle(album)} (${plural(album.image_count, "image")}). `,
        h("a", { href: albumHash(album.id), id: `${id}-open` }, "Open album"),
      );
    } catch (error) {
      message.textContent = describe(error);
    } finally {
      add.disabled = false;
    }
  });
  return panel;
}
