// The model history on My model (GET /getmodels, POST /usemodel): every
// kept version with its held-out Spearman and MAE, and a button to serve
// an older one again. Also modelFreshness(): "model last changed ..." that
// checks every few seconds and calls back when the serving version changes
// (an automatic retraining, or a switch), so screens refresh by themselves.

import { api, describe } from "../lib/api.js";
import { h } from "../lib/dom.js";
import { fmt } from "../lib/format.js";
import { isCurrent } from "../lib/router.js";
import { session } from "../lib/session.js";

const CHECK_MS = 5000;
let generation = 0; // only the newest freshness line keeps checking
const when = (stamp) => (stamp ? stamp.replace("T", " ").replace("Z", " UTC") : "—");

/** The serving version of the user's model, or null. */
export async function servingVersion() {
  const history = await api("getmodels", { params: { user: session.user } });
  return history.versions.find((v) => v.serving) || null;
}

/** A line saying when the model last changed; ``changed()`` runs when the
 * serving version differs from the one first seen, while ``token`` is current. */
export function modelFreshness(token, changed) {
  const line = h("p", { id: "model-freshness", class: "muted", "aria-live": "polite" }, "");
  let seen;
  const mine = ++generation;
  const live = () => isCurrent(token) && mine === generation;
  const check = async () => {
    if (!live()) return;
    try {
      const serving = await servingVersion();
      if (!live()) return;
      const version = serving ? serving.version : null;
      line.textContent = serving
        ? `Model ${serving.version}, last changed ${when(serving.trained_at)} (on ${serving.trained_on_ratings} ratings).`
        : "No model yet: it trains by itself after 10 ratings.";
      if (seen !== undefined && version !== seen) {
        seen = version;
        changed(serving);
        return;
      }
      seen = version;
    } catch (error) {
      line.textContent = describe(error);
    }
    setTimeout(check, CHECK_MS);
  };
  check();
  return line;
}

/** The versions table with a "Use this version" button per older one. */
export function versionsPanel(token, switched) {
  const area = h("div", { id: "model-versions" }, h("p", { class: "muted" }, "Loading versions…"));
  const message = h("p", { id: "versions-message", "aria-live": "polite" });
  const show = async () => {
    let history;
    try {
      history = await api("getmodels", { params: { user: session.user } });
    } catch (error) {
      area.replaceChildren(h("p", { class: "muted" }, describe(error)));
      return;
    }
    if (!isCurrent(token)) return;
    if (!history.versions.length) {
      area.replaceChildren(h("p", { class: "muted" }, "No versions yet."));
      return;
    }
    const rows = history.versions.map((v) => {
      const use = v.serving
        ? h("span", { class: "status-ok" }, "Serving")
        : h("button", { type: "button", class: "use-version", dataset: { version: v.version } }, "Use this version");
      if (!v.serving) {
        use.addEventListener("click", async () => {
          use.disabled = true;
          try {
            await api("usemodel", { method: "POST", params: { user: session.user, version: v.version } });
            message.textContent = `Version ${v.version} serves now; predictions are being rescored.`;
            switched(v);
          } catch (error) {
            use.disabled = false;
            message.textContent = describe(error);
          }
        });
      }
      return h(
        "tr",
        {},
        h("td", {}, v.version),
        h("td", {}, when(v.trained_at)),
        h("td", {}, String(v.trained_on_ratings ?? "—")),
        h("td", {}, fmt(v.metrics.spearman)),
        h("td", {}, fmt(v.metrics.mae)),
        h("td", {}, use),
      );
    });
    area.replaceChildren(
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { id: "versions-table" },
          h(
            "thead",
            {},
            h("tr", {}, ...["Version", "Trained", "Ratings", "Spearman", "MAE", ""].map((t) => h("th", {}, t))),
          ),
          h("tbody", {}, ...rows),
        ),
      ),
    );
  };
  show();
  return h("div", {}, area, message);
}
