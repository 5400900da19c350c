// The viewer's tag editor: the image's tags by source (manual, model,
// taught; each source its own colour), a × to remove one (a model or taught
// tag stays removed through re-tagging), a box to add tags with suggestions
// from the collection's tags, and the taught tags as suggestions to accept
// (it becomes manual) or reject (a negative example), one key each.
//
// Keys (while the box is not focused): t focuses the box, a accepts and
// r rejects the first suggestion. In the box: Enter adds (comma-separated
// for several), Escape leaves it.

import { api, describe } from "../lib/api.js";
import { h } from "../lib/dom.js";

const SOURCE_TITLE = { manual: "added by a person", model: "the tagger's", taught: "learned from people's tags" };

/**
 * ``hrefFor(tag)``: the library filtered by the tag. Returns ``{ element, onKey }``:
 * ``onKey(event)`` is true when the editor used the key.
 */
export function tagEditor(image, hrefFor) {
  let tags = [];
  const list = h("ul", { class: "tags tagedit", id: "tag-edit-list" });
  const suggestions = h("div", { class: "tag-suggestions", id: "tag-suggestions" });
  const status = h("p", { class: "muted", "aria-live": "polite", id: "tag-status" });
  const options = h("datalist", { id: "tag-options" });
  const input = h("input", {
    type: "text",
    id: "tag-input",
    list: "tag-options",
    placeholder: "Add tags (comma-separated)",
    "aria-label": "Add tags",
    autocomplete: "off",
  });
  const element = h(
    "div",
    { class: "tag-editor" },
    list,
    suggestions,
    h("form", { class: "navrow", onsubmit: (event) => { event.preventDefault(); add(input.value); } }, input,
      h("button", { type: "submit" }, "Add")),
    options,
    status,
  );

  function show() {
    const own = tags.filter((t) => t.source !== "taught");
    const taught = tags.filter((t) => t.source === "taught");
    list.replaceChildren(
      ...(own.length ? [] : [h("li", { class: "muted" }, "No tags yet.")]),
      ...own.map((t) =>
        h(
          "li",
          { class: `tag tag-${t.source}`, title: `${t.tag}: ${SOURCE_TITLE[t.source] || t.source}` },
          h("a", { href: hrefFor(t.tag) }, t.tag),
          t.score === null ? null : h("small", {}, ` ${Math.round(t.score * 100)}%`),
          h("button", { type: "button", class: "tag-remove", "aria-label": `Remove ${t.tag}`, onclick: () => remove(t.tag) }, "×"),
        ),
      ),
    );
    suggestions.replaceChildren(
      ...(taught.length ? [h("span", { class: "muted" }, "Suggested: ")] : []),
      ...taught.map((t, i) =>
        h(
          "span",
          { class: "tag tag-taught", title: "learned from people's tags" },
          `${t.tag} `,
          h("small", {}, `${Math.round((t.score || 0) * 100)}%`),
          h("button", { type: "button", class: "tag-accept", "aria-label": `Accept ${t.tag}`, onclick: () => add(t.tag) },
            i === 0 ? "✓ (a)" : "✓"),
          h("button", { type: "button", class: "tag-reject", "aria-label": `Reject ${t.tag}`, onclick: () => remove(t.tag) },
            i === 0 ? "✗ (r)" : "✗"),
        ),
      ),
    );
  }

  async function change(path, names) {
    const wanted = names.map((n) => n.trim()).filter(Boolean);
    if (!wanted.length) return;
    try {
      const body = await api(path, { method: "POST", json: { image, tags: wanted } });
      tags = body.tags;
      status.textContent = "";
      show();
    } catch (error) {
      status.textContent = describe(error);
    }
  }

  const add = async (text) => {
    await change("addtags", String(text).split(","));
    if (!status.textContent) input.value = "";
  };
  const remove = (tag) => change("removetags", [tag]);

  let lastPrefix = null;
  input.addEventListener("input", async () => {
    const prefix = input.value.split(",").pop().trim();
    if (prefix.length < 1 || prefix === lastPrefix) return;
    lastPrefix = prefix;
    try {
      const body = await api("gettags", { params: { prefix, limit: 20 } });
      if (lastPrefix !== prefix) return;
      options.replaceChildren(...body.tags.map((tag) => h("option", { value: tag })));
    } catch {
      // suggestions are a help only
    }
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      input.blur();
      event.stopPropagation();
    }
  });

  api("getimagetags", { params: { image, detail: "true" } })
    .then((body) => {
      tags = body.tags;
      show();
    })
    .catch((error) => {
      status.textContent = describe(error);
    });

  function onKey(event) {
    const first = tags.find((t) => t.source === "taught");
    if (event.key === "t") {
      input.focus();
      return true;
    }
    if (event.key === "a" && first) {
      add(first.tag);
      return true;
    }
    if (event.key === "r" && first) {
      remove(first.tag);
      return true;
    }
    return false;
  }

  return { element, onKey };
}
