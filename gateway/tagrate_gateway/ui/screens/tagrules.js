// Admin: tag aliases and implications (/tagaliases, /tagimplications) and
// the taught tags (/taughttags). A section of the admin screen.

import { api, describe } from "../lib/api.js";
import { h, table } from "../lib/dom.js";

function ruleForm(id, fields, submit) {
  const inputs = fields.map(([name, label]) => h("input", { type: "text", id: `${id}-${name}`, "aria-label": label, placeholder: label }));
  const status = h("span", { class: "muted", "aria-live": "polite" });
  const form = h(
    "form",
    {
      class: "navrow",
      id,
      onsubmit: async (event) => {
        event.preventDefault();
        try {
          await submit(...inputs.map((input) => input.value.trim()));
          inputs.forEach((input) => (input.value = ""));
          status.textContent = "";
        } catch (error) {
          status.textContent = describe(error);
        }
      },
    },
    ...inputs,
    h("button", { type: "submit" }, "Add"),
    status,
  );
  return form;
}

/** The section's content, loaded into ``content`` (an element). */
export async function loadTagRules(content) {
  const [aliases, implications, taught] = await Promise.all([api("tagaliases"), api("tagimplications"), api("taughttags")]);
  const reload = () => loadTagRules(content).catch((error) => content.replaceChildren(h("p", { class: "error" }, describe(error))));
  const remove = (path) => async () => {
    try {
      await api(path, { method: "DELETE" });
      reload();
    } catch (error) {
      content.prepend(h("p", { class: "error", role: "alert" }, describe(error)));
    }
  };
  content.replaceChildren(
    h("h3", {}, "Aliases"),
    h("p", { class: "muted" }, "Adding, removing or filtering by an alias acts on its tag."),
    table(
      ["Alias", "Tag", ""],
      aliases.aliases.map((a) => [
        h("span", { class: "tag tag-manual" }, a.alias),
        a.tag,
        h("button", { type: "button", onclick: remove(`tagaliases/${encodeURIComponent(a.alias)}`) }, "Delete"),
      ]),
      "alias-table",
    ),
    ruleForm("alias-form", [["alias", "alias (kitty)"], ["tag", "tag (cat)"]], async (alias, tag) => {
      await api("tagaliases", { method: "POST", json: { alias, tag } });
      reload();
    }),
    h("h3", {}, "Implications"),
    h("p", { class: "muted" }, "Adding a tag adds what it implies; a filter on the implied tag matches it too."),
    table(
      ["Tag", "Implies", ""],
      implications.implications.map((i) => [
        i.tag,
        i.implies,
        h("button", {
          type: "button",
          onclick: remove(`tagimplications/${encodeURIComponent(i.tag)}/${encodeURIComponent(i.implies)}`),
        }, "Delete"),
      ]),
      "implication-table",
    ),
    ruleForm("implication-form", [["tag", "tag (cat)"], ["implies", "implies (animal)"]], async (tag, implies) => {
      await api("tagimplications", { method: "POST", json: { tag, implies } });
      reload();
    }),
    h("h3", {}, "Taught tags"),
    taught.length
      ? table(
          ["Tag", "Examples", "Removed", "Images tagged", "Precision (CV)", "Learned"],
          taught.map((t) => [
            h("span", { class: "tag tag-taught" }, t.tag),
            t.examples,
            t.negatives,
            t.images_tagged,
            t.precision_cv.toFixed(2),
            t.trained_at,
          ]),
          "taught-table",
        )
      : h("p", { class: "muted" }, "None yet: a tag people put on enough images is learned and suggested on the others."),
  );
}
