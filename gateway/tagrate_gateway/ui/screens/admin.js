// Admin: tokens (with access control on), users and their models,
// background work (retry what failed), re-tagging.

import { api, describe } from "../lib/api.js";
import { $, banner, h, mount, table } from "../lib/dom.js";
import { BROWSE_ALL, imageHash } from "../lib/listing.js";
import { session } from "../lib/session.js";
import { loadTagRules } from "./tagrules.js";

async function section(title, id, load) {
  const content = h("div", { id }, h("p", { class: "muted" }, "Loading…"));
  const el = h("section", {}, h("h2", {}, title), content);
  load(content).catch((error) => content.replaceChildren(h("p", { class: "error", role: "alert" }, describe(error))));
  return el;
}

async function loadTokens(content) {
  if (!session.auth) {
    // Tokens made now would do nothing: every visitor may already act as any user.
    content.replaceChildren(
      h(
        "p",
        { class: "hint", id: "access-off" },
        "Access control is off: anyone who can reach this server may act as any user, so tokens have no effect. ",
        "Turn it on with GATEWAY_AUTH=on (it is on by default when the gateway listens beyond loopback) to create and revoke tokens here.",
      ),
    );
    return;
  }
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

export async function render() {
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
    await section("Tag rules", "tag-rules", loadTagRules),
  );
  loadDatasets(users, work).catch((error) => users.replaceChildren(h("p", { class: "error", role: "alert" }, describe(error))));
}

