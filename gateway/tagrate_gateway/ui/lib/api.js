// The REST API client: every request the page makes goes through api().
// Relative URLs, so the page works behind a proxy that serves it under a
// prefix; credentials are the gateway's HttpOnly session cookie, sent by the
// browser and never seen here.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const query = (params) => {
  const clean = Object.entries(params).filter(([, v]) => v !== null && v !== undefined && v !== "");
  return new URLSearchParams(clean.map(([k, v]) => [k, String(v)])).toString();
};

let unauthorized = () => {};
/** What to do when the gateway answers 401 (the session ended): set by the app. */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

export async function api(path, { method = "GET", params, form, json } = {}) {
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
    if (response.status === 401 && path !== "login") unauthorized();
    throw error;
  }
  return body;
}

export function describe(error) {
  if (!(error instanceof ApiError)) return String(error && error.message ? error.message : error);
  if (error.status === 503) return `Service unavailable: ${error.message}`;
  if (error.status === 504) return `A service did not answer in time: ${error.message}`;
  return error.message;
}

/** A 404 about the thing asked for (unknown user or image), not an unknown path. */
export const isNotFound = (error) => error.status === 404 && error.code !== "unknown_endpoint";
