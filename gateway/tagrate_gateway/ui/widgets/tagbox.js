// The library's tag box: a combobox of its own (not the browser's
// datalist) over GET /gettags?contains=. The word being typed (after the
// last comma, a leading "-" kept) is matched anywhere in tag names, spaces
// as "_" ("tabby cat" finds tabby_cat); suggestions show how many images
// carry each tag, names starting with the word first, then the most
// common. ↑/↓ move, Enter or a click takes one, Escape closes; Enter with
// nothing chosen applies the filter.

import { api } from "../lib/api.js";
import { h } from "../lib/dom.js";

const SHOWN = 12;
const FETCHED = 400; // /gettags lists by name: enough to rank the best matches by count
const DEBOUNCE_MS = 120;

/** The word being typed: the text after the last comma, its "-" and the rest. */
function current(value) {
  const parts = value.split(",");
  const last = parts.pop().trimStart();
  const negate = last.startsWith("-");
  return { head: parts.map((p) => p.trim()).filter(Boolean), negate, word: (negate ? last.slice(1) : last).trim() };
}

/** Normalised like tag names: lower case, spaces as "_". */
export const tagWord = (text) => text.trim().toLowerCase().replace(/\s+/g, "_");

/**
 * Wraps ``input`` (in place) with a suggestion list; returns the wrapper.
 * ``id``: the list's id (its options are ``${id}-N``), distinct for each box on a page.
 */
export function tagBox(input, { id = "tag-suggestions" } = {}) {
  const list = h("ul", { id, role: "listbox", hidden: true, "aria-label": "Matching tags" });
  const wrap = h("div", { class: "tagbox" });
  input.replaceWith(wrap);
  wrap.append(input, list);
  input.setAttribute("role", "combobox");
  input.setAttribute("aria-autocomplete", "list");
  input.setAttribute("aria-controls", id);
  input.setAttribute("aria-expanded", "false");
  let timer = null;
  let asked = 0;
  let active = -1;

  const options = () => [...list.querySelectorAll("[role=option]")];
  const close = () => {
    list.hidden = true;
    list.replaceChildren();
    active = -1;
    input.setAttribute("aria-expanded", "false");
    input.removeAttribute("aria-activedescendant");
  };
  const highlight = (index) => {
    const all = options();
    if (!all.length) return;
    active = (index + all.length) % all.length;
    all.forEach((o, i) => o.setAttribute("aria-selected", String(i === active)));
    input.setAttribute("aria-activedescendant", all[active].id);
    all[active].scrollIntoView({ block: "nearest" });
  };
  const choose = (tag) => {
    const { head, negate } = current(input.value);
    input.value = `${[...head, (negate ? "-" : "") + tag].join(", ")}, `;
    close();
    input.focus();
  };

  async function suggest() {
    const { word } = current(input.value);
    const contains = tagWord(word);
    if (!contains) return close();
    const mine = ++asked;
    let reply;
    try {
      reply = await api("gettags", { params: { contains, limit: FETCHED } });
    } catch {
      return close(); // suggestions are a convenience; the filter still works
    }
    if (mine !== asked) return; // a later keystroke asked again
    const ranked = reply.tags
      .map((tag, i) => ({ tag, count: reply.counts[i] }))
      .sort((a, b) => Number(b.tag.startsWith(contains)) - Number(a.tag.startsWith(contains)) || b.count - a.count)
      .slice(0, SHOWN);
    if (!ranked.length) return close();
    list.replaceChildren(
      ...ranked.map(({ tag, count }, i) =>
        h(
          "li",
          {
            role: "option",
            id: `${id}-${i}`,
            "aria-selected": "false",
            dataset: { tag },
            // mousedown, not click: the input keeps the focus
            onmousedown: (event) => {
              event.preventDefault();
              choose(tag);
            },
          },
          h("span", {}, tag),
          h("small", {}, String(count)),
        ),
      ),
    );
    active = -1;
    list.hidden = false;
    input.setAttribute("aria-expanded", "true");
  }

  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(suggest, DEBOUNCE_MS);
  });
  input.addEventListener("keydown", (event) => {
    if (list.hidden) return;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      highlight(active + (event.key === "ArrowDown" ? 1 : -1));
    } else if (event.key === "Enter" && active >= 0) {
      event.preventDefault(); // take the suggestion; a second Enter applies the filter
      choose(options()[active].dataset.tag);
    } else if (event.key === "Escape") {
      event.preventDefault();
      close();
    } else if (event.key === "Enter") {
      close();
    }
  });
  input.addEventListener("blur", () => setTimeout(close, 150));
  return wrap;
}

/** ``filters`` with ``tag`` added, or taken out when it is already there (the viewer's tag links). */
export function toggleTag(filters, tag) {
  const items = filters.split(",").map((t) => t.trim()).filter(Boolean);
  const kept = items.filter((t) => t !== tag);
  return (kept.length === items.length ? [...items, tag] : kept).join(",");
}

/** Whether ``filters`` holds ``tag`` (not its exclusion). */
export const hasTag = (filters, tag) => filters.split(",").some((t) => t.trim() === tag);
