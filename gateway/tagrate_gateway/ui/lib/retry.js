// A failed load that can recover: when a service is down (the gateway
// unreachable, a 5xx) the screen shows the error with a Retry button and
// tries again by itself every few seconds, so the page comes back on its
// own once the service does.

import { describe } from "./api.js";
import { h } from "./dom.js";
import { go, isCurrent } from "./router.js";

export const RETRY_MS = 3000;

/** Whether trying again later may work: no answer, or a server-side failure. */
export const transient = (error) => !error || error.status === 0 || error.status >= 500 || error.status === 429;

/** The error box for the view ``token``; reloads the view while it is current. */
export function retryBox(error, token) {
  const reload = () => {
    if (isCurrent(token)) go(location.hash, true);
  };
  const again = h("button", { type: "button", id: "retry", onclick: reload }, "Retry now");
  const box = h(
    "div",
    { class: "errorbox", id: "load-error", role: "alert" },
    h("p", {}, describe(error)),
    transient(error) ? h("p", { class: "muted" }, `Trying again every ${RETRY_MS / 1000} s…`) : null,
    again,
  );
  if (transient(error)) setTimeout(reload, RETRY_MS);
  return box;
}
