// Upload: choose or drop images, one rating for the whole batch (or none),
// per-file and batch progress, each failure in plain words.

import { $, h, mount } from "../lib/dom.js";
import { LEVELS, RANKS } from "../lib/format.js";
import { forgetListings, libraryHash } from "../lib/listing.js";
import { session } from "../lib/session.js";
import { toast } from "../lib/toast.js";

const UPLOAD_CONCURRENCY = 2;

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

export function render() {
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
    ...RANKS.map((rank, k) => h("option", { value: String(k), dataset: { rank: k } }, `Rank ${rank}`)),
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
      ...files.map((file) => {
        // A preview of the chosen file itself (a blob: URL, never uploaded for it).
        const preview = file.type.startsWith("image/") ? h("img", { class: "preview", alt: "", src: URL.createObjectURL(file) }) : null;
        if (preview) preview.addEventListener("load", () => URL.revokeObjectURL(preview.src), { once: true });
        return h(
          "li",
          { class: preview ? "with-preview" : null },
          preview,
          h("span", { class: "name" }, file.name),
          h("progress", { max: 1, value: 0 }),
        );
      }),
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
    forgetListings();
    if (ok) toast(`Uploaded ${ok} image${ok === 1 ? "" : "s"}${rating === null ? "" : `, rated ${RANKS[level]}`}.`);
    if (failed) toast(`${failed} upload${failed === 1 ? "" : "s"} failed: see the list.`, "error");
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

