// Tag suggestions for the library's filter box, from GET /gettags.

import { api } from "../lib/api.js";
import { h } from "../lib/dom.js";

export function tagSuggestions(input, list) {
  let timer = null;
  let last = "";
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const parts = input.value.split(",");
      const current = parts.pop().trimStart();
      const negate = current.startsWith("-");
      const prefix = (negate ? current.slice(1) : current).trim();
      if (!prefix || prefix === last) return;
      last = prefix;
      try {
        const reply = await api("gettags", { params: { prefix, limit: 12 } });
        const head = parts.map((p) => p.trim()).filter(Boolean);
        list.replaceChildren(
          ...reply.tags.map((tag, i) =>
            h("option", { value: [...head, (negate ? "-" : "") + tag].join(", ") }, `${tag} (${reply.counts[i]})`),
          ),
        );
      } catch {
        list.replaceChildren(); // suggestions are a convenience; the filter still works
      }
    }, 150);
  });
}
