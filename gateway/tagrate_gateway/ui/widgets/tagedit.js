// The viewer's one tag list: the image's tags by source (manual, model,
// taught; each source its own background) and, with a tagger that reports
// them (WD v3, DeepDanbooru), by category (general, character, rating; each
// its own text and edge colour, as on a booru). Clicking a tag toggles it in the
// library's filter (``hrefFor``/``isOn``, as the list's filter chips do); an
// editable list has a × to remove a manual or model tag (a model tag stays
// removed through re-tagging), a box to add tags with suggestions from the
// collection's tags, and shows the taught tags as suggestions to accept (it
// becomes manual) or reject (a negative example), one key each.
//
// Keys (while the box is not focused): t focuses the box, a accepts and
// r rejects the first suggestion. In the box: Enter adds (comma-separated
// for several), Escape leaves it.

import { api, describe } from "../lib/api.js";
import { h } from "../lib/dom.js";

const SOURCE_TITLE = { manual: "added by a person", model: "the tagger's", taught: "learned from people's tags" };
const CATEGORIES = new Set(["general", "character", "rating"]);

/**
 * ``hrefFor(tag)``: the library with the tag toggled in its filter;
 * ``isOn(tag)``: whether the filter holds it; ``editable``: whether this
 * caller may add and remove tags. Returns ``{ element, onKey }``:
 * ``onKey(event)`` is true when the list used the key.
 */
export function tagEditor(image, hrefFor, isOn = () => false, editable = true) {
  let tags = [];
  let loaded = false;
  const list = h("ul", { class: "tags tagedit", id: "tags" });
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
    editable
      ? h("form", { class: "navrow", onsubmit: (event) => { event.preventDefault(); add(input.value); } }, input,
        h("button", { type: "submit" }, "Add"))
      : null,
    options,
    status,
  );

  function chip(t, firstTaught) {
    const on = isOn(t.tag);
    const taught = t.source === "taught";
    const what = SOURCE_TITLE[t.source] || t.source;
    const buttons = !editable
      ? []
      : taught
        ? [
          h("button", { type: "button", class: "tag-accept", "aria-label": `Accept ${t.tag}`, onclick: () => add(t.tag) },
            firstTaught ? "✓ (a)" : "✓"),
          h("button", { type: "button", class: "tag-reject", "aria-label": `Reject ${t.tag}`, onclick: () => remove(t.tag) },
            firstTaught ? "✗ (r)" : "✗"),
        ]
        : [h("button", { type: "button", class: "tag-remove", "aria-label": `Remove ${t.tag}`, onclick: () => remove(t.tag) }, "×")];
    return h(
      "li",
      {
        class: `tag tag-${t.source}${CATEGORIES.has(t.category) ? ` tag-cat-${t.category}` : ""}`,
        title: `${t.tag}: ${what}${t.category ? `, ${t.category}` : ""}${taught && editable ? " (a suggestion: accept or reject)" : ""}`,
        dataset: t.category ? { category: t.category } : {},
      },
      h(
        "a",
        {
          href: hrefFor(t.tag),
          title: on ? `Take ${t.tag} out of the filter` : `Add ${t.tag} to the filter`,
          "aria-pressed": String(on),
          dataset: { tag: t.tag },
        },
        `${t.tag} `,
        t.score === null || t.score === undefined ? null : h("small", {}, `${Math.round(t.score * 100)}%`),
      ),
      ...buttons,
    );
  }

  function show() {
    const first = tags.find((t) => t.source === "taught");
    list.replaceChildren(
      ...(tags.length || !loaded ? [] : [h("li", { class: "muted" }, "No tags yet.")]),
      ...tags.map((t) => chip(t, t === first)),
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
      loaded = true;
      show();
    })
    .catch((error) => {
      status.textContent = describe(error);
    });

  function onKey(event) {
    if (!editable) return false;
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
