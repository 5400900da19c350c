// Building the page: elements from plain data, never from HTML strings (no
// innerHTML anywhere), so a tag or file name is always text.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export const $ = (selector, root = document) => root.querySelector(selector);

export function mount(...nodes) {
  $("#main").replaceChildren(...nodes);
}

export function emptyState(text, ...actions) {
  const buttons = actions.filter(Boolean);
  return h("div", { class: "empty" }, h("p", {}, text), buttons.length ? h("p", {}, ...buttons) : null);
}

export const errorText = (text) => h("p", { class: "error", role: "alert" }, text);

export function banner(message) {
  const el = $("#banner");
  el.replaceChildren();
  if (!message) {
    el.hidden = true;
    return;
  }
  el.append(h("span", {}, message), h("button", { type: "button", onclick: () => banner(null) }, "Dismiss"));
  el.hidden = false;
}

export function table(headers, rows, id) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { id },
      h("thead", {}, h("tr", {}, ...headers.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, ...rows.map((cells) => h("tr", {}, ...cells.map((c) => h("td", {}, c))))),
    ),
  );
}

export const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
