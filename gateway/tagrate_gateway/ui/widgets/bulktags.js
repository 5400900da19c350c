// "Tags…" for a grid selection: adds manual tags to, or removes tags from,
// every selected image (POST /addtags or /removetags once per image, a few
// at a time). The box suggests the collection's tags as the library's
// filter box does; comma-separated names act together. Removing a tagger's
// or a taught tag hides it on those images, as in the viewer.

import { api, describe } from "../lib/api.js";
import { forEach } from "../lib/bulk.js";
import { h } from "../lib/dom.js";
import { tagBox } from "./tagbox.js";

/**
 * ``names()``: the selected images; ``done(verb, result)`` reports a run
 * that changed some (``result`` as ``forEach`` gives it); one that changed
 * none says why in the panel. Returns the panel.
 */
export function bulkTags(names, done, { id = "bulk-tags" } = {}) {
  const input = h("input", {
    type: "text",
    id: `${id}-input`,
    placeholder: "cat, sofa",
    autocomplete: "off",
    spellcheck: "false",
    "aria-label": "Tags for the selected images (comma-separated)",
  });
  const add = h("button", { type: "submit", class: "primary", id: `${id}-add` }, "Add tags");
  const remove = h("button", { type: "button", id: `${id}-remove` }, "Remove tags");
  const message = h("span", { class: "muted", id: `${id}-message`, "aria-live": "polite" });
  const form = h("form", { class: "row" }, input, add, remove);
  const panel = h("details", { class: "albumpicker", id }, h("summary", {}, "Tags…"), form, message);
  tagBox(input, { id: `${id}-suggestions` });

  async function change(path, verb) {
    const tags = input.value.split(",").map((t) => t.trim()).filter(Boolean);
    const images = names();
    if (!tags.length) {
      message.textContent = "Type one or more tags (comma-separated) first.";
      input.focus();
      return;
    }
    if (!images.length) {
      message.textContent = "Select some images first.";
      return;
    }
    add.disabled = remove.disabled = true;
    message.textContent = "";
    try {
      const result = await forEach(images, (image) => api(path, { method: "POST", json: { image, tags } }));
      if (!result.ok) {
        // Nothing changed (a bad tag name, say): the API's reason, the selection kept.
        message.textContent = describe(result.failed[0][1]);
        return;
      }
      done(`${verb} ${tags.join(", ")}:`, result);
    } finally {
      add.disabled = remove.disabled = false;
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    change("addtags", "Tagged");
  });
  remove.addEventListener("click", () => change("removetags", "Untagged"));
  return panel;
}
