// My model: the user's rating histogram, their model's held-out figures,
// and training it with live progress.

import { api, describe, isNotFound } from "../lib/api.js";
import { $, emptyState, h, mount } from "../lib/dom.js";
import { eta, fmt, RANKS } from "../lib/format.js";
import { retryBox } from "../lib/retry.js";
import { isCurrent } from "../lib/router.js";
import { session } from "../lib/session.js";
import { modelFreshness, versionsPanel } from "../widgets/versions.js";
import { toast } from "../lib/toast.js";

const POLL_MS = 500;

function histogram(counts) {
  const most = Math.max(1, ...counts);
  return h(
    "div",
    { class: "hist", id: "histogram", role: "img", "aria-label": `Ratings per rank: ${counts.map((c, k) => `${RANKS[k]} ${c}`).join(", ")}` },
    ...counts.map((count, k) => {
      const fill = h("div", { class: "fill" });
      fill.style.height = `${(count / most) * 100}%`; // CSSOM, allowed by the style-src policy
      return h(
        "div",
        { class: "bar", dataset: { level: k + 1, rank: k } },
        h("span", { class: "count" }, String(count)),
        fill,
        h("span", { class: "label" }, RANKS[k]),
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

export async function render({ token }) {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  mount(h("h1", {}, "My model"), body);
  let stats;
  try {
    stats = await api("getstats", { params: { user: session.user } });
  } catch (error) {
    if (!isCurrent(token)) return;
    if (isNotFound(error)) {
      body.replaceChildren(
        emptyState(
          `${session.user} has no ratings yet, so there is nothing to learn from.`,
          h("a", { class: "button", href: "#/upload" }, "Upload and rate images"),
        ),
      );
    } else body.replaceChildren(retryBox(error, token));
    return;
  }
  if (!isCurrent(token)) return;
  const upToDate = stats.RaterNNP_up_to_date;
  const model = stats.model;
  const progress = h("progress", { id: "train-progress", max: 1, value: 0, hidden: true });
  const trainState = h("p", { id: "train-state", "aria-live": "polite" });
  const trainButton = h("button", { type: "button", class: "primary", id: "train" }, "Train my model");
  const stopButton = h("button", { type: "button", id: "stop-training", hidden: true }, "Stop");

  let polling = false;
  // One overall figure that only grows: a training runs several phases
  // (candidate models, then the final fit), each with its own epochs.
  let shown = { job: null, fraction: 0 };
  const showStatus = (status) => {
    const mine = status.current_user === session.user;
    if (status.is_training) {
      if (shown.job !== status.started_at) shown = { job: status.started_at, fraction: 0 };
      shown.fraction = Math.max(shown.fraction, Math.min(1, Number(status.progress) || 0));
      progress.hidden = !mine;
      progress.value = shown.fraction;
      const left = status.eta_seconds !== null && status.eta_seconds !== undefined ? ` · ${eta(status.eta_seconds)}` : "";
      trainState.textContent = mine
        ? `Training your model: ${Math.round(shown.fraction * 100)}%${left}`
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
            : `Training ${job.outcome || "ended"}${job.error ? `: ${job.error}` : "."}`;
    }
  };
  const poll = async () => {
    polling = true;
    while (isCurrent(token)) {
      let status;
      try {
        status = (await api("trainerstatus")).status;
      } catch (error) {
        trainState.textContent = describe(error);
        break;
      }
      if (!isCurrent(token)) return;
      showStatus(status);
      if (!status.is_training) {
        if (status.last_job && status.last_job.user === session.user) {
          const done = trainState.textContent;
          await render({ token }); // the new figures
          if (isCurrent(token)) $("#train-state").textContent = done;
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
      toast("Training started.");
      showStatus(reply.status);
      poll();
    } catch (error) {
      trainButton.disabled = false;
      trainState.textContent =
        error.status === 409 && error.code === "model_up_to_date"
          ? `Your model is already up to date: it has learned from all ${stats.image_count} of your ratings. Rate or re-rate some images, then train it again.`
          : error.status === 400 && error.code === "not_enough_ratings"
            ? `Not enough ratings yet (${error.message}). Rate a few more images first.`
            : error.status === 409
              ? "The trainer is busy with another training; try again when it is done."
              : describe(error);
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
          model.trained_on_ratings != null ? ` · trained on ${model.trained_on_ratings} ratings` : "",
          model.trained_at ? ` at ${model.trained_at.replace("T", " ").replace("Z", " UTC")}` : "",
          upToDate ? "" : " · you have rated since: train again to include the new ratings.",
        )
      : h("p", { id: "model-state", class: "empty" }, "No model yet. Rate at least 10 images, then train it."),
    metrics && (metrics.spearman !== undefined || metrics.mean_spearman !== undefined) ? metricsTable(metrics) : null,
    modelFreshness(token, () => render({ token })),
    model ? h("h2", {}, "Versions") : null,
    model ? versionsPanel(token, () => render({ token })) : null,
    h("div", { class: "row" }, trainButton, stopButton),
    progress,
    trainState,
  );
  try {
    const status = (await api("trainerstatus")).status;
    if (!isCurrent(token)) return;
    showStatus(status);
    if (status.is_training) poll();
  } catch (error) {
    trainState.textContent = describe(error);
  }
}

