// tagrate's browser UI: one ES module, no build step, only the public REST API.
//
// The view lives in the URL fragment (#/library?sort=...&page=2,
// #/image/NAME?filters=...), so a reload or a shared link shows the same
// screen. Credentials are the gateway's HttpOnly session cookie (sent by the
// browser; never seen or stored here); with access control off the chosen
// user name is the only thing kept, in localStorage. Every state change is a
// POST (or DELETE for a token), never a GET.

const PAGE_SIZE = 60;
const THUMB_SIZE = 305; // the API's default grid cell: one cached thumbnail per image
const VIEW_SIZE = 1280;
const LEVELS = [0, 1, 2, 3, 4, 5, 6].map((k) => k / 6); // the original's seven rating levels
const POLL_MS = 500;
const UPLOAD_CONCURRENCY = 2;
const USER_KEY = "tagrate.user"; // auth off: the chosen user name (not a secret)
const ACTING_KEY = "tagrate.actingUser"; // an admin token without a user: whose data to show
const ADVANCE_KEY = "tagrate.advance";
const USER_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const SORTS = [
  ["date-desc", "Newest rated"],
  ["date-asc", "Oldest rated"],
  ["rating-desc", "Highest rating"],
  ["rating-asc", "Lowest rating"],
  ["predicted-desc", "For you (predicted)"],
  ["predicted-asc", "Predicted lowest"],
  ["name-asc", "Name A–Z"],
  ["name-desc", "Name Z–A"],
];
const RATED = [
  ["yes", "Rated"],
  ["no", "Not rated"],
  ["all", "All"],
];

const session = { auth: false, user: null, admin: false, ready: false };
let viewToken = 0; // bumped on every navigation: stale async work checks it and stops

// ---- small helpers ----------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function h(tag, attrs = {}, ...children) {
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

const $ = (selector, root = document) => root.querySelector(selector);
const fmt = (value) => (value === null || value === undefined ? "—" : Number(value).toFixed(2));
const levelOf = (rating) => (rating === null || rating === undefined ? null : Math.round(rating * 6));
const query = (params) => {
  const clean = Object.entries(params).filter(([, v]) => v !== null && v !== undefined && v !== "");
  return new URLSearchParams(clean.map(([k, v]) => [k, String(v)])).toString();
};

function describe(error) {
  if (!(error instanceof ApiError)) return String(error && error.message ? error.message : error);
  if (error.status === 503) return `Service unavailable: ${error.message}`;
  if (error.status === 504) return `A service did not answer in time: ${error.message}`;
  return error.message;
}

// Relative URLs: the page works behind a proxy that serves it under a prefix.
async function api(path, { method = "GET", params, form, json } = {}) {
  const url = params ? `${path}?${query(params)}` : path;
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (form !== undefined) {
    init.body = new URLSearchParams(query(form));
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch {
    throw new ApiError(0, "network", "The gateway cannot be reached. Check the connection and try again.");
  }
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message = (body && body.error) || `The gateway answered ${response.status} ${response.statusText}.`;
    const error = new ApiError(response.status, (body && body.code) || `http_${response.status}`, message);
    if (response.status === 401 && path !== "login" && session.auth) {
      session.user = null;
      session.admin = false;
      go("#/signin");
    }
    throw error;
  }
  return body;
}

function banner(message) {
  const el = $("#banner");
  el.replaceChildren();
  if (!message) {
    el.hidden = true;
    return;
  }
  el.append(h("span", {}, message), h("button", { type: "button", onclick: () => banner(null) }, "Dismiss"));
  el.hidden = false;
}

function go(hash, replace = false) {
  if (location.hash === hash) route();
  else if (replace) {
    history.replaceState(null, "", hash);
    route();
  } else location.hash = hash;
}

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, search = ""] = raw.split("?", 2);
  const parts = path.split("/").map(decodeURIComponent);
  return { screen: parts[0] || "library", arg: parts[1] || null, params: new URLSearchParams(search) };
}

function listContext(params) {
  return {
    filters: params.get("filters") || "",
    sort: params.get("sort") || "date-desc",
    rated: params.get("rated") || "yes",
  };
}

const libraryHash = (ctx, page = 1) => `#/library?${query({ ...ctx, page: page > 1 ? page : null })}`;
const imageHash = (name, ctx) => `#/image/${encodeURIComponent(name)}?${query(ctx)}`;

function mount(...nodes) {
  const main = $("#main");
  main.replaceChildren(...nodes);
}

function emptyState(text, ...actions) {
  return h("div", { class: "empty" }, h("p", {}, text), actions.length ? h("p", {}, ...actions) : null);
}

// ---- session ------------------------------------------------------------------

async function loadSession() {
  try {
    const who = await api("whoami");
    session.auth = Boolean(who.auth);
    session.user = who.user || null;
    session.admin = Boolean(who.admin);
  } catch (error) {
    if (error.status === 404) {
      // A gateway without access control: everyone may act as any user.
      Object.assign(session, { auth: false, user: null, admin: true });
    } else if (error.status === 401) {
      Object.assign(session, { auth: true, user: null, admin: false });
    } else {
      throw error;
    }
  }
  if (!session.auth) session.user = localStorage.getItem(USER_KEY);
  else if (session.admin && !session.user) session.user = sessionStorage.getItem(ACTING_KEY);
  session.ready = true;
}

const signedIn = () => (session.auth ? session.admin || session.user !== null : session.user !== null);

function renderHeader(screen) {
  const nav = $("#nav");
  nav.hidden = !signedIn() || !session.user;
  $("#nav-admin").hidden = !session.admin;
  for (const link of nav.querySelectorAll("a")) {
    if (link.dataset.screen === screen || (screen === "image" && link.dataset.screen === "library")) {
      link.setAttribute("aria-current", "page");
    } else link.removeAttribute("aria-current");
  }
  const who = $("#who");
  who.replaceChildren();
  if (!signedIn()) return;
  const label = session.user ? `Signed in as ${session.user}` : "Admin";
  who.append(h("span", { id: "who-name" }, label, session.admin && session.user ? " (admin)" : ""));
  if (!session.auth || (session.admin && session.user)) {
    who.append(h("button", { type: "button", id: "switch-user", onclick: switchUser }, "Switch user"));
  }
  if (session.auth) who.append(h("button", { type: "button", id: "sign-out", onclick: signOut }, "Sign out"));
}

function switchUser() {
  if (session.auth) sessionStorage.removeItem(ACTING_KEY);
  else localStorage.removeItem(USER_KEY);
  session.user = session.auth && !session.admin ? session.user : null;
  go("#/signin");
}

async function signOut() {
  try {
    await api("logout", { method: "POST" });
  } catch (error) {
    banner(describe(error));
  }
  sessionStorage.removeItem(ACTING_KEY);
  Object.assign(session, { user: null, admin: false });
  go("#/signin");
}

function chooseUser(name) {
  session.user = name;
  if (session.auth) sessionStorage.setItem(ACTING_KEY, name);
  else localStorage.setItem(USER_KEY, name);
}

async function knownUsers() {
  try {
    return (await api("verifydatasets")).users.map((u) => u.user);
  } catch {
    return []; // only a convenience for the picker
  }
}

async function renderSignIn() {
  const error = h("p", { class: "error", role: "alert", id: "signin-error" });
  const needsToken = session.auth && !signedIn();
  if (needsToken) {
    const input = h("input", { type: "password", id: "token", name: "token", autocomplete: "off", required: true });
    const form = h(
      "form",
      { id: "signin-form" },
      h("label", {}, "Access token", input),
      h("button", { class: "primary", type: "submit" }, "Sign in"),
      error,
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.textContent = "";
      try {
        await api("login", { method: "POST", json: { token: input.value.trim() } });
        input.value = ""; // the secret lives only in the HttpOnly cookie from here on
        await loadSession();
        go(session.user ? "#/library" : "#/signin");
      } catch (err) {
        error.textContent = err.status === 401 ? "That token is not valid (or has expired or been revoked)." : describe(err);
      }
    });
    mount(h("section", { class: "card signin" }, h("h1", {}, "Sign in"), form));
    input.focus();
    return;
  }
  // Access control off, or an admin token without a user: pick whose data to show.
  const list = h("datalist", { id: "known-users" });
  const input = h("input", {
    type: "text",
    id: "user-name",
    name: "user",
    list: "known-users",
    autocomplete: "username",
    required: true,
    pattern: "[A-Za-z0-9_.\\-]{1,64}",
    value: session.user || "",
  });
  const form = h(
    "form",
    { id: "signin-form" },
    h("label", {}, "Your user name", input),
    h("p", { class: "muted" }, "1–64 letters, digits, '_', '.' or '-'. A new name starts with your first rating."),
    h("button", { class: "primary", type: "submit" }, "Continue"),
    error,
    list,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const name = input.value.trim();
    if (!USER_RE.test(name) || name === "all") {
      error.textContent = "Use 1–64 letters, digits, '_', '.' or '-' (and not 'all').";
      return;
    }
    chooseUser(name);
    go("#/library");
  });
  const intro = session.auth
    ? "Signed in with an admin token. Whose ratings do you want to see?"
    : "Access control is off on this gateway: pick the user whose ratings you want to see and change.";
  mount(h("section", { class: "card signin" }, h("h1", {}, "Choose a user"), h("p", {}, intro), form));
  input.focus();
  for (const name of await knownUsers()) list.append(h("option", { value: name }));
}

// ---- library --------------------------------------------------------------------

function tagSuggestions(input, list) {
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

function controls(ctx) {
  const filter = h("input", {
    type: "search",
    id: "filter",
    name: "filters",
    value: ctx.filters,
    list: "tag-suggestions",
    placeholder: "cat, sofa, -dog",
    autocomplete: "off",
    "aria-describedby": "filter-help",
  });
  const suggestions = h("datalist", { id: "tag-suggestions" });
  tagSuggestions(filter, suggestions);
  const select = (id, label, options, value) =>
    h(
      "label",
      {},
      label,
      h("select", { id, name: id }, ...options.map(([v, text]) => h("option", { value: v, selected: v === value }, text))),
    );
  const form = h(
    "form",
    { class: "controls", id: "library-controls", role: "search" },
    h("label", { class: "filter" }, "Tags (all of them; -tag excludes)", filter),
    select("sort", "Sort", SORTS, ctx.sort),
    select("rated", "Show", RATED, ctx.rated),
    h("button", { type: "submit", class: "primary" }, "Apply"),
    suggestions,
    h("span", { id: "filter-help", hidden: true }, "Comma-separated tag names; prefix a tag with - to exclude it."),
  );
  const apply = () => {
    const data = new FormData(form);
    go(libraryHash({ filters: String(data.get("filters")).trim(), sort: data.get("sort"), rated: data.get("rated") }));
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    apply();
  });
  for (const el of form.querySelectorAll("select")) el.addEventListener("change", apply);
  return form;
}

function tile(item, ctx) {
  let badge = null;
  let label = "not rated";
  if (item.rating !== null && item.rating !== undefined) {
    badge = h("span", { class: "badge" }, `★ ${fmt(item.rating)}`);
    label = `rated ${fmt(item.rating)}`;
  } else if (item.predicted !== null && item.predicted !== undefined) {
    badge = h("span", { class: "badge pred" }, `≈ ${fmt(item.predicted)}`);
    label = `predicted ${fmt(item.predicted)}`;
  }
  const src = `getthumbnail?${query({ image: item.image, size: THUMB_SIZE })}`;
  return h(
    "li",
    { class: "tile", dataset: { image: item.image } },
    h(
      "a",
      { href: imageHash(item.image, ctx), "aria-label": `${item.image.slice(0, 12)}…, ${label}` },
      h("img", { src, alt: "", width: THUMB_SIZE, height: THUMB_SIZE, decoding: "async" }),
      badge,
    ),
  );
}

function pager(ctx, page, maxPage, total) {
  const link = (p, text, id) =>
    p >= 1 && p <= maxPage && p !== page
      ? h("a", { class: "button", href: libraryHash(ctx, p), id }, text)
      : h("button", { type: "button", disabled: true, id }, text);
  return h(
    "nav",
    { class: "pager", "aria-label": "Pages" },
    link(1, "« First", "page-first"),
    link(page - 1, "‹ Previous", "page-prev"),
    h("span", { id: "page-info" }, `Page ${page} of ${maxPage} · ${total} image${total === 1 ? "" : "s"}`),
    link(page + 1, "Next ›", "page-next"),
    link(maxPage, "Last »", "page-last"),
  );
}

async function renderLibrary(params, token) {
  const ctx = listContext(params);
  const page = Math.max(1, parseInt(params.get("page") || "1", 10) || 1);
  const status = h("p", { class: "muted", id: "library-status", "aria-live": "polite" }, "Loading…");
  const grid = h("ul", { class: "grid", id: "grid", "aria-label": "Images" });
  mount(h("h1", {}, "Library"), controls(ctx), status, grid);
  let reply;
  try {
    reply = await api("getuserdata", { params: { user: session.user, page, limit: PAGE_SIZE, ...ctx } });
  } catch (error) {
    if (token !== viewToken) return;
    status.remove();
    if (error.status === 404 && error.code !== "unknown_endpoint") {
      grid.replaceWith(
        emptyState(
          `${session.user} has no ratings yet.`,
          h("a", { class: "button", href: "#/upload" }, "Upload and rate your first images"),
        ),
      );
    } else if (error.status === 400 && ctx.sort.startsWith("predicted")) {
      grid.replaceWith(
        emptyState(
          "Sorting by prediction is not available on this server yet.",
          h("a", { class: "button", href: libraryHash({ ...ctx, sort: "date-desc" }) }, "Sort by date instead"),
        ),
      );
    } else {
      grid.replaceWith(h("p", { class: "error", role: "alert" }, describe(error)));
    }
    return;
  }
  if (token !== viewToken) return;
  cacheListing(ctx, page, reply.images);
  if (reply.images.length === 0) {
    status.remove();
    const text =
      reply.total === 0
        ? ctx.filters
          ? "No images match these tags."
          : ctx.rated === "no"
            ? "Nothing left to rate: every stored image has your rating."
            : "No ratings yet."
        : "This page is past the end of the list.";
    grid.replaceWith(
      emptyState(text, reply.total > 0 ? h("a", { class: "button", href: libraryHash(ctx) }, "Go to page 1") : null),
    );
    return;
  }
  status.textContent = "";
  status.hidden = true;
  grid.append(...reply.images.map((item) => tile(item, ctx)));
  grid.after(pager(ctx, page, reply.max_page, reply.total));
}

// ---- listing cache (the viewer finds the current image's rating and prediction) ----

const listings = new Map();
const listingKey = (ctx, page) => JSON.stringify([session.user, ctx.filters, ctx.sort, ctx.rated, page]);

function cacheListing(ctx, page, images) {
  if (listings.size > 50) listings.clear();
  listings.set(listingKey(ctx, page), images);
}

async function listingPage(ctx, page) {
  const key = listingKey(ctx, page);
  if (!listings.has(key)) {
    const reply = await api("getuserdata", { params: { user: session.user, page, limit: PAGE_SIZE, ...ctx } });
    cacheListing(ctx, page, reply.images);
  }
  return listings.get(key);
}

// ---- viewer ----------------------------------------------------------------------

const BROWSE_ALL = { filters: "", sort: "name-asc", rated: "all" };

async function locate(name, ctx) {
  // Where the image stands in the current list; an image outside it (just
  // uploaded, or rated out of a "not rated" list) is found in the whole collection.
  for (const candidate of [ctx, BROWSE_ALL]) {
    try {
      const where = await api("getimageneighbours", { params: { image: name, user: session.user, ...candidate } });
      const page = Math.ceil(where.position / PAGE_SIZE);
      const items = await listingPage(candidate, page);
      return { where, item: items.find((i) => i.image === name) || null, ctx: candidate };
    } catch (error) {
      if (error.status !== 404 || error.code === "unknown_endpoint") throw error;
    }
  }
  return { where: null, item: null, ctx };
}

function ratingButtons(current, onRate) {
  const level = levelOf(current);
  return h(
    "div",
    { class: "levels", role: "group", "aria-label": "Rate this image (keys 1 to 7)" },
    ...LEVELS.map((value, k) =>
      h(
        "button",
        {
          type: "button",
          class: "level",
          dataset: { level: k + 1 },
          title: `Rate ${fmt(value)} (key ${k + 1})`,
          "aria-pressed": level === k && Math.abs(current - value) < 1e-6 ? "true" : "false",
          onclick: () => onRate(k),
        },
        String(k + 1),
      ),
    ),
  );
}

async function renderViewer(name, params, token) {
  const ctx = listContext(params);
  mount(h("p", { class: "muted" }, "Loading…"));
  let located;
  let tags;
  try {
    [located, tags] = await Promise.all([
      locate(name, ctx),
      api("getimagetags", { params: { image: name, scores: "true" } }),
    ]);
  } catch (error) {
    if (token !== viewToken) return;
    mount(
      h("h1", {}, "Image"),
      h("p", { class: "error", role: "alert" }, describe(error)),
      h("a", { class: "button", href: libraryHash(ctx) }, "Back to the library"),
    );
    return;
  }
  if (token !== viewToken) return;
  const { where, item } = located;
  let rating = item ? item.rating : null;
  const predicted = item ? item.predicted : undefined;
  const prev = where && where.prev_image.image;
  const next = where && where.next_image.image;
  const inList = where && located.ctx === ctx;
  const navCtx = located.ctx;

  const img = h("img", {
    id: "viewer-image",
    src: `getimage?${query({ image: name, size: VIEW_SIZE })}`,
    alt: `Image ${name}`,
  });
  const ratingValue = h("div", { class: "value", id: "my-rating" }, fmt(rating));
  const scores = h(
    "div",
    { class: "scores" },
    h("div", { class: "score" }, h("div", { class: "muted" }, "Your rating"), ratingValue),
    predicted === undefined
      ? null
      : h(
          "div",
          { class: "score pred" },
          h("div", { class: "muted" }, "Predicted"),
          h(
            "div",
            { class: predicted === null ? "value none" : "value", id: "predicted" },
            predicted === null ? "no model yet" : fmt(predicted),
          ),
        ),
  );
  const message = h("p", { id: "viewer-message", "aria-live": "polite", class: "muted" });
  const levels = h("div", {});
  const removeButton = h("button", { type: "button", id: "remove-rating", onclick: () => removeRating() }, "Remove rating");
  const advance = h("input", { type: "checkbox", id: "advance", checked: localStorage.getItem(ADVANCE_KEY) === "1" });
  advance.addEventListener("change", () => localStorage.setItem(ADVANCE_KEY, advance.checked ? "1" : "0"));

  const show = () => {
    ratingValue.textContent = fmt(rating);
    levels.replaceChildren(ratingButtons(rating, rate));
    removeButton.disabled = rating === null;
  };

  async function rate(k) {
    const value = LEVELS[k];
    try {
      await api("updaterating", { method: "POST", json: { image: name, user: session.user, rating: value } });
      if (token !== viewToken) return;
      rating = value;
      listings.clear(); // every cached page may now be ordered or filtered differently
      message.textContent = `Rated ${fmt(value)}.`;
      show();
      if (advance.checked && next) go(imageHash(next, navCtx));
    } catch (error) {
      message.textContent = describe(error);
    }
  }

  async function removeRating() {
    if (rating === null) return;
    try {
      await api("removerating", { method: "POST", form: { image: name, user: session.user } });
      if (token !== viewToken) return;
      rating = null;
      listings.clear();
      message.textContent = "Rating removed.";
      show();
    } catch (error) {
      message.textContent = describe(error);
    }
  }

  let deleteArea = null;
  if (session.admin) {
    deleteArea = h("div", { class: "navrow" });
    const ask = h("button", { type: "button", class: "danger", id: "delete-image" }, "Delete image…");
    ask.addEventListener("click", () => {
      const confirm = h("button", { type: "button", class: "danger", id: "confirm-delete" }, "Delete for everyone");
      const cancel = h("button", { type: "button", id: "cancel-delete" }, "Cancel");
      confirm.addEventListener("click", async () => {
        try {
          await api("deleteimage", { method: "POST", form: { image: name } });
          listings.clear();
          go(next ? imageHash(next, navCtx) : prev ? imageHash(prev, navCtx) : libraryHash(ctx), true);
        } catch (error) {
          message.textContent = describe(error);
        }
      });
      cancel.addEventListener("click", () => deleteArea.replaceChildren(ask));
      deleteArea.replaceChildren(
        h("span", {}, "This removes the image, its tags and every user's rating of it."),
        confirm,
        cancel,
      );
      cancel.focus();
    });
    deleteArea.append(ask);
  }

  const navLink = (target, text, id, key) =>
    target
      ? h("a", { class: "button", id, href: imageHash(target, navCtx), "aria-keyshortcuts": key }, text)
      : h("button", { type: "button", id, disabled: true }, text);
  const position = where
    ? `${where.position} of ${where.max_image}${inList ? "" : " in the whole collection"}`
    : "not in this list";
  const tagList = tags.tags.length
    ? h(
        "ul",
        { class: "tags", id: "tags" },
        ...tags.tags.map(([tag, score]) =>
          h(
            "li",
            {},
            h(
              "a",
              { href: libraryHash({ ...ctx, filters: tag }), title: `Images tagged ${tag}` },
              `${tag} `,
              h("small", {}, `${Math.round(score * 100)}%`),
            ),
          ),
        ),
      )
    : h("p", { class: "muted", id: "tags" }, tags.tagged ? "No tags above the model's threshold." : "Not tagged yet.");

  mount(
    h(
      "div",
      { class: "viewer" },
      h("div", { class: "stage" }, img),
      h(
        "section",
        { class: "side", "aria-label": "Rating and tags" },
        h(
          "div",
          { class: "navrow" },
          navLink(prev, "← Previous", "prev-image", "ArrowLeft"),
          h("span", { id: "position" }, position),
          navLink(next, "Next →", "next-image", "ArrowRight"),
        ),
        scores,
        levels,
        h("div", { class: "navrow" }, removeButton, h("label", { class: "inline" }, h("span", {}, "Next image after rating"), advance)),
        message,
        h("h2", {}, "Tags"),
        tagList,
        tags.source ? h("p", { class: "muted" }, "Source: ", tags.source) : null,
        deleteArea,
        h("p", { class: "keys" }, h("kbd", {}, "1"), "–", h("kbd", {}, "7"), " rate · ", h("kbd", {}, "0"), " remove · ",
          h("kbd", {}, "←"), h("kbd", {}, "→"), " previous/next · ", h("kbd", {}, "Esc"), " back to the list"),
        h("a", { href: libraryHash(ctx, where && inList ? Math.ceil(where.position / PAGE_SIZE) : 1) , id: "back" }, "Back to the list"),
      ),
    ),
  );
  show();
  // The next image is usually wanted soon: fetch it into the cache now.
  if (next) new Image().src = `getimage?${query({ image: next, size: VIEW_SIZE })}`;

  viewerKeys = (event) => {
    if (event.key >= "1" && event.key <= "7") rate(Number(event.key) - 1);
    else if (event.key === "0") removeRating();
    else if (event.key === "ArrowLeft" && prev) go(imageHash(prev, navCtx));
    else if (event.key === "ArrowRight" && next) go(imageHash(next, navCtx));
    else if (event.key === "Escape") go(libraryHash(ctx, where && inList ? Math.ceil(where.position / PAGE_SIZE) : 1));
    else return;
    event.preventDefault();
  };
}

let viewerKeys = null;
document.addEventListener("keydown", (event) => {
  if (!viewerKeys || event.altKey || event.ctrlKey || event.metaKey) return;
  const target = event.target;
  if (target instanceof HTMLElement && target.closest("input, select, textarea")) return;
  viewerKeys(event);
});

// ---- upload ------------------------------------------------------------------------

function uploadOne(file, rating, row) {
  // XMLHttpRequest rather than fetch: only it reports upload progress.
  return new Promise((resolve) => {
    const form = new FormData();
    form.append("image", file, file.name);
    let path = "addimage";
    if (rating !== null) {
      path = "addrating";
      form.append("user", session.user);
      form.append("rating", String(rating));
    }
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) row.progress(event.loaded / event.total);
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) {
        row.done(body.new_image ? "Stored." : "Already stored (same bytes).", body.image);
      } else {
        const why = (body && body.error) || `the gateway answered ${xhr.status}`;
        const prefix =
          xhr.status === 413
            ? "Too large: "
            : xhr.status === 415
              ? "Not an image tagrate can read: "
              : xhr.status === 503
                ? "Service unavailable: "
                : "";
        row.failed(prefix + why);
      }
      resolve();
    });
    xhr.addEventListener("error", () => {
      row.failed("The upload was cut off: the gateway could not be reached.");
      resolve();
    });
    xhr.send(form);
  });
}

function renderUpload() {
  const input = h("input", { type: "file", id: "file-input", multiple: true, accept: "image/*", hidden: true });
  const choose = h("button", { type: "button", id: "choose-files", onclick: () => input.click() }, "Choose images…");
  const drop = h(
    "div",
    { class: "drop", id: "drop-zone" },
    h("p", {}, "Drop images here (JPEG, PNG, WebP, GIF, BMP), or"),
    choose,
    input,
  );
  const ratingSelect = h(
    "select",
    { id: "batch-rating" },
    h("option", { value: "" }, "No rating: just store them"),
    ...LEVELS.map((value, k) => h("option", { value: String(k) }, `${k + 1} of 7 (${fmt(value)})`)),
  );
  const list = h("ul", { class: "files", id: "file-list", "aria-live": "polite" });
  const batchBar = h("progress", { id: "batch-progress", max: 1, value: 0 });
  const batchText = h("p", { id: "batch-status", class: "muted" }, "No files chosen yet.");
  const start = h("button", { type: "button", class: "primary", id: "start-upload", disabled: true }, "Upload");
  const after = h("p", { id: "upload-done" });
  let files = [];

  const add = (chosen) => {
    for (const file of chosen) files.push(file);
    list.replaceChildren(
      ...files.map((file) => h("li", {}, h("span", { class: "name" }, file.name), h("progress", { max: 1, value: 0 }))),
    );
    batchText.textContent = `${files.length} file${files.length === 1 ? "" : "s"} ready.`;
    start.disabled = files.length === 0;
  };
  input.addEventListener("change", () => add([...input.files]));
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    add([...event.dataTransfer.files]);
  });

  start.addEventListener("click", async () => {
    const level = ratingSelect.value === "" ? null : Number(ratingSelect.value);
    const rating = level === null ? null : LEVELS[level];
    const batch = files;
    files = [];
    start.disabled = true;
    after.replaceChildren();
    const total = batch.reduce((sum, f) => sum + f.size, 0) || 1;
    const sent = batch.map(() => 0);
    let ok = 0;
    let failed = 0;
    const rows = [...list.children].map((li, i) => {
      const bar = $("progress", li);
      const state = h("span", { class: "state" }, "Waiting…");
      li.append(state);
      const update = () => {
        const fraction = sent.reduce((sum, s, j) => sum + s * batch[j].size, 0) / total;
        batchBar.value = fraction;
        batchText.textContent = `${ok + failed} of ${batch.length} done · ${Math.round(fraction * 100)}%${failed ? ` · ${failed} failed` : ""}`;
      };
      return {
        progress(fraction) {
          sent[i] = fraction;
          bar.value = fraction;
          state.textContent = `Uploading… ${Math.round(fraction * 100)}%`;
          update();
        },
        done(text) {
          sent[i] = 1;
          bar.value = 1;
          ok += 1;
          li.classList.add("done");
          state.textContent = text;
          update();
        },
        failed(text) {
          sent[i] = 1;
          failed += 1;
          li.classList.add("failed");
          state.textContent = text;
          update();
        },
      };
    });
    let nextIndex = 0;
    const worker = async () => {
      while (nextIndex < batch.length) {
        const i = nextIndex++;
        await uploadOne(batch[i], rating, rows[i]);
      }
    };
    await Promise.all(Array.from({ length: Math.min(UPLOAD_CONCURRENCY, batch.length) }, worker));
    listings.clear();
    const where = rating === null ? { sort: "date-desc", rated: "no" } : { sort: "date-desc", rated: "yes" };
    after.replaceChildren(
      `${ok} stored${failed ? `, ${failed} failed` : ""}. `,
      h("a", { href: libraryHash({ filters: "", ...where }), id: "see-uploads" }, "See them in the library"),
    );
  });

  mount(
    h("h1", {}, "Upload"),
    drop,
    h("div", { class: "row" }, h("label", {}, "Rating for the whole batch", ratingSelect), start),
    batchBar,
    batchText,
    list,
    after,
  );
}

// ---- my model -------------------------------------------------------------------------

function histogram(counts) {
  const most = Math.max(1, ...counts);
  return h(
    "div",
    { class: "hist", id: "histogram", role: "img", "aria-label": `Ratings per level: ${counts.join(", ")}` },
    ...counts.map((count, k) => {
      const fill = h("div", { class: "fill" });
      fill.style.height = `${(count / most) * 100}%`; // CSSOM, allowed by the style-src policy
      return h(
        "div",
        { class: "bar", dataset: { level: k + 1 } },
        h("span", { class: "count" }, String(count)),
        fill,
        h("span", { class: "label" }, String(k + 1)),
      );
    }),
  );
}

function metricsTable(metrics) {
  const row = (label, mine, baseline) =>
    h("tr", {}, h("th", { scope: "row" }, label), h("td", {}, fmt(mine)), h("td", {}, fmt(baseline)));
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { id: "model-metrics" },
      h("thead", {}, h("tr", {}, h("th", {}, "Held-out"), h("th", {}, "Your model"), h("th", {}, "Predict my mean"))),
      h(
        "tbody",
        {},
        row("Spearman (higher is better)", metrics.spearman, metrics.mean_spearman),
        row("Mean absolute error (lower is better)", metrics.mae, metrics.mean_mae),
      ),
    ),
  );
}

function eta(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 60) return `about ${Math.max(1, Math.round(seconds))} s left`;
  return `about ${Math.round(seconds / 60)} min left`;
}

async function renderModel(token) {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  mount(h("h1", {}, "My model"), body);
  let stats;
  try {
    stats = await api("getstats", { params: { user: session.user } });
  } catch (error) {
    if (token !== viewToken) return;
    if (error.status === 404 && error.code !== "unknown_endpoint") {
      body.replaceChildren(
        emptyState(
          `${session.user} has no ratings yet, so there is nothing to learn from.`,
          h("a", { class: "button", href: "#/upload" }, "Upload and rate images"),
        ),
      );
    } else body.replaceChildren(h("p", { class: "error", role: "alert" }, describe(error)));
    return;
  }
  if (token !== viewToken) return;
  const upToDate = stats.RaterNNP_up_to_date;
  const model = stats.model;
  const progress = h("progress", { id: "train-progress", max: 1, value: 0, hidden: true });
  const trainState = h("p", { id: "train-state", "aria-live": "polite" });
  const trainButton = h("button", { type: "button", class: "primary", id: "train" }, "Train my model");
  const stopButton = h("button", { type: "button", id: "stop-training", hidden: true }, "Stop");

  let polling = false;
  const showStatus = (status) => {
    const mine = status.current_user === session.user;
    if (status.is_training) {
      progress.hidden = false;
      progress.value = status.progress || 0;
      const epoch = status.epochs ? ` · epoch ${status.epoch} of ${status.epochs}` : "";
      trainState.textContent = mine
        ? `Training: ${Math.round((status.progress || 0) * 100)}%${epoch}${status.eta_seconds !== null ? ` · ${eta(status.eta_seconds)}` : ""}`
        : `The trainer is busy with ${status.current_user === "all" ? "the global model" : "another user"}; try again when it is done.`;
      trainButton.disabled = true;
      stopButton.hidden = !session.admin; // /stoptraining is admin-only: a user's click would be a 403
      return;
    }
    progress.hidden = true;
    trainButton.disabled = false;
    stopButton.hidden = true;
    const job = status.last_job;
    if (job && job.user === session.user && polling) {
      trainState.textContent =
        job.outcome === "succeeded"
          ? "Training finished: your model is up to date."
          : job.outcome === "stopped"
            ? "Training stopped; the previous model (if any) keeps serving."
            : `Training ${job.outcome}: ${job.error || "no details"}`;
    }
  };
  const poll = async () => {
    polling = true;
    while (token === viewToken) {
      let status;
      try {
        status = (await api("trainerstatus")).status;
      } catch (error) {
        trainState.textContent = describe(error);
        break;
      }
      if (token !== viewToken) return;
      showStatus(status);
      if (!status.is_training) {
        if (status.last_job && status.last_job.user === session.user) {
          const done = trainState.textContent;
          await renderModel(token); // the new figures
          if (token === viewToken) $("#train-state").textContent = done;
        }
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  };
  trainButton.addEventListener("click", async () => {
    trainButton.disabled = true;
    trainState.textContent = "Starting…";
    try {
      const reply = await api("trainuser", { method: "POST", form: { user: session.user } });
      showStatus(reply.status);
      poll();
    } catch (error) {
      trainButton.disabled = false;
      trainState.textContent = describe(error);
    }
  });
  stopButton.addEventListener("click", async () => {
    try {
      await api("stoptraining", { method: "POST" });
      trainState.textContent = "Stopping…";
    } catch (error) {
      trainState.textContent = describe(error);
    }
  });

  const metrics = model && model.metrics ? model.metrics : null;
  body.replaceChildren(
    h("p", { id: "rating-count" }, `${stats.image_count} rated image${stats.image_count === 1 ? "" : "s"}.`),
    h("h2", {}, "Your ratings"),
    histogram(stats.rating_distribution),
    h("h2", {}, "Model"),
    model
      ? h(
          "p",
          { id: "model-state" },
          h("span", { class: upToDate ? "status-ok" : "status-stale" }, upToDate ? "Up to date" : "Out of date"),
          ` · trained on ${model.trained_on_ratings} ratings${model.trained_at ? ` at ${model.trained_at.replace("T", " ").replace("Z", " UTC")}` : ""}`,
          upToDate ? "" : " · you have rated since: train again to include the new ratings.",
        )
      : h("p", { id: "model-state", class: "empty" }, "No model yet. Rate at least 10 images, then train it."),
    metrics && (metrics.spearman !== undefined || metrics.mean_spearman !== undefined) ? metricsTable(metrics) : null,
    h("div", { class: "row" }, trainButton, stopButton),
    progress,
    trainState,
  );
  try {
    const status = (await api("trainerstatus")).status;
    if (token !== viewToken) return;
    showStatus(status);
    if (status.is_training) poll();
  } catch (error) {
    trainState.textContent = describe(error);
  }
}

// ---- admin --------------------------------------------------------------------------

async function section(title, id, load) {
  const content = h("div", { id }, h("p", { class: "muted" }, "Loading…"));
  const el = h("section", {}, h("h2", {}, title), content);
  load(content).catch((error) => content.replaceChildren(h("p", { class: "error", role: "alert" }, describe(error))));
  return el;
}

function table(headers, rows, id) {
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

async function loadTokens(content) {
  let reply;
  try {
    reply = await api("tokens");
  } catch (error) {
    if (error.status === 404 || error.status === 405) {
      content.replaceChildren(h("p", { class: "muted" }, "Access control is not available on this gateway: no tokens to manage."));
      return;
    }
    throw error;
  }
  const tokens = Array.isArray(reply) ? reply : reply.tokens || [];
  const userInput = h("input", { type: "text", id: "token-user", pattern: "[A-Za-z0-9_.\\-]{1,64}" });
  const adminBox = h("input", { type: "checkbox", id: "token-admin" });
  const expiry = h(
    "select",
    { id: "token-expiry" },
    h("option", { value: "" }, "Never"),
    h("option", { value: String(86400) }, "1 day"),
    h("option", { value: String(30 * 86400) }, "30 days"),
    h("option", { value: String(365 * 86400) }, "1 year"),
  );
  const created = h("div", { id: "new-token", "aria-live": "polite" });
  const form = h(
    "form",
    { class: "row", id: "token-form" },
    h("label", {}, "For user", userInput),
    h("label", {}, "Admin", adminBox),
    h("label", {}, "Expires", expiry),
    h("button", { type: "submit", class: "primary" }, "Create token"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const reply = await api("tokens", {
        method: "POST",
        form: {
          user: adminBox.checked ? null : userInput.value.trim(),
          admin: adminBox.checked ? "true" : null,
          expires_in: expiry.value || null,
        },
      });
      created.replaceChildren(
        h("p", {}, "Copy this token now: it is shown only once."),
        h("p", { class: "secret", id: "token-secret" }, reply.token),
      );
      await loadTokens(content);
      content.prepend(created);
    } catch (error) {
      created.replaceChildren(h("p", { class: "error", role: "alert" }, describe(error)));
    }
  });
  const rows = tokens.map((t) => [
    String(t.id),
    t.admin ? "admin" : t.user || "—",
    t.expires_at || "never",
    h(
      "button",
      {
        type: "button",
        class: "danger",
        "aria-label": `Revoke token ${t.id}`,
        onclick: async () => {
          try {
            await api(`tokens/${encodeURIComponent(t.id)}`, { method: "DELETE" });
            await loadTokens(content);
          } catch (error) {
            banner(describe(error));
          }
        },
      },
      "Revoke",
    ),
  ]);
  content.replaceChildren(
    form,
    created,
    tokens.length ? table(["Id", "For", "Expires", ""], rows, "token-table") : h("p", { class: "muted" }, "No tokens yet."),
  );
}

async function loadDatasets(users, work) {
  const reply = await api("verifydatasets");
  users.replaceChildren(
    reply.users.length
      ? table(
          ["User", "Ratings", "Model", "Last rating"],
          reply.users.map((u) => [
            u.user,
            String(u.ratings),
            u.model_up_to_date ? "up to date" : u.trained_on_ratings === null ? "none" : "out of date",
            u.last_rating_at || "—",
          ]),
          "user-table",
        )
      : h("p", { class: "muted" }, "No users yet."),
  );
  const note = h("p", { id: "work-message", "aria-live": "polite" });
  const retry = h("button", { type: "button", id: "retry-failed" }, "Retry failed work");
  retry.addEventListener("click", async () => {
    try {
      const done = await api("retryfailed", { method: "POST" });
      await loadDatasets(users, work);
      $("#work-message").textContent = `Queued ${done.retried} item${done.retried === 1 ? "" : "s"} again.`;
    } catch (error) {
      note.textContent = describe(error);
    }
  });
  const kinds = Object.entries(reply.work || {});
  const failed = reply.failed_work || [];
  work.replaceChildren(
    h("p", { id: "untagged" }, `${reply.untagged_images} untagged image${reply.untagged_images === 1 ? "" : "s"}. `,
      kinds.map(([kind, w]) => `${kind}: ${w.pending} pending, ${w.failed} failed. `)),
    failed.length
      ? table(
          ["Image", "Kind", "Error", "Attempts"],
          failed.map((f) => [
            h("a", { href: imageHash(f.image, BROWSE_ALL) }, f.image.slice(0, 16) + "…"),
            f.kind,
            f.error,
            String(f.attempts),
          ]),
          "failed-table",
        )
      : h("p", { class: "muted" }, "No failed work."),
    h("div", { class: "row" }, retry),
    note,
  );
  retry.disabled = failed.length === 0 && !kinds.some(([, w]) => w.failed > 0);
}

function retagControls() {
  const note = h("p", { id: "retag-message", "aria-live": "polite" });
  const run = async (full, button) => {
    button.disabled = true;
    note.textContent = full ? "Re-tagging every image…" : "Tagging the images the current model has not tagged…";
    try {
      const reply = await api("updatetags", { method: "POST", form: { full: full ? "true" : null } });
      note.textContent = `Tagged ${reply.updated_images_count} image${reply.updated_images_count === 1 ? "" : "s"} with ${reply.model}.`;
    } catch (error) {
      note.textContent = describe(error);
    }
    button.disabled = false;
  };
  const some = h("button", { type: "button", id: "retag" }, "Tag untagged images");
  const all = h("button", { type: "button", id: "retag-all" }, "Re-tag everything");
  some.addEventListener("click", () => run(false, some));
  all.addEventListener("click", () => run(true, all));
  return h("div", {}, h("div", { class: "row" }, some, all), note);
}

async function renderAdmin() {
  if (!session.admin) {
    mount(h("h1", {}, "Admin"), h("p", { class: "error" }, "This screen needs an admin token."));
    return;
  }
  const users = h("div", { id: "users" }, h("p", { class: "muted" }, "Loading…"));
  const work = h("div", { id: "work" });
  mount(
    h("h1", {}, "Admin"),
    await section("Tokens", "tokens", loadTokens),
    h("section", {}, h("h2", {}, "Users"), users),
    h("section", {}, h("h2", {}, "Background work"), work),
    h("section", {}, h("h2", {}, "Re-tag"), retagControls()),
  );
  loadDatasets(users, work).catch((error) => users.replaceChildren(h("p", { class: "error", role: "alert" }, describe(error))));
}

// ---- routing -------------------------------------------------------------------------

async function route() {
  const token = ++viewToken;
  viewerKeys = null;
  banner(null);
  try {
    if (!session.ready) await loadSession();
  } catch (error) {
    mount(h("p", { class: "error", role: "alert" }, describe(error)));
    return;
  }
  const { screen, arg, params } = parseHash();
  const target = !signedIn() || !session.user ? "signin" : screen;
  renderHeader(target);
  document.title = `tagrate · ${target}`;
  try {
    if (target === "signin") await renderSignIn();
    else if (target === "image" && arg) await renderViewer(arg, params, token);
    else if (target === "upload") renderUpload();
    else if (target === "model") await renderModel(token);
    else if (target === "admin") await renderAdmin();
    else await renderLibrary(params, token);
  } catch (error) {
    if (token === viewToken) banner(describe(error));
  }
  if (token === viewToken && document.activeElement === document.body) $("#main").focus({ preventScroll: true });
}

window.addEventListener("hashchange", route);
route();
