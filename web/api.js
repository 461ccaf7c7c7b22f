// The API client: JSON over fetch with the session cookie, the CSRF token on every change, and
// errors as ApiError (the server's message, its HTTP status and the field it names).

let csrfToken = null;
let onUnauthorized = () => {};
// The current page load: a new navigation aborts the reads of the one before, so a slow page that
// answers after the user moved on never replaces the page they moved to.
let navigation = new AbortController();

// Starts a page load, cancelling the previous one; returns its signal.
export function beginNavigation() {
  navigation.abort();
  navigation = new AbortController();
  return navigation.signal;
}

// Thrown instead of an answer that arrived for a page the user has left.
export class Cancelled extends Error {
  constructor() {
    super("cancelled: the user moved on");
    this.name = "AbortError";
  }
}

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.field = body && body.field;
  }
}

// The token that goes with every request that changes something (from the session answer).
export function setCsrfToken(token) {
  csrfToken = token;
}

// What to do when the server says the session is gone (401), before the call throws.
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

// Reads (GET) belong to the page load they started in and are cancelled with it; changes are not.
export async function api(path, options = {}) {
  const reading = !options.method || options.method === "GET";
  const signal = options.signal || (reading ? navigation.signal : undefined);
  if (signal && signal.aborted) throw new Cancelled();
  // A caller's own headers (e.g. Idempotency-Key) go with ours, never instead of them.
  const headers = { ...(options.headers || {}), Accept: "application/json" };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  if (options.method && options.method !== "GET" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  const response = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
    credentials: "same-origin",
    signal,
  });
  const text = await response.text();
  if (signal && signal.aborted) throw new Cancelled();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = text; }
  if (response.status === 401 && path !== "/api/v1/session") onUnauthorized();
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

// A 400 names the field in its text already ("secrets.webhook_url: …"); other fields are added.
export function errorText(error) {
  const message = error.message || String(error);
  return error.field && error.field !== "body" && !message.startsWith(error.field) ? `${error.field}: ${message}` : message;
}

// "HTTP 503: down", without saying the status twice when the text starts with it (sender errors do).
export function withStatus(status, text) {
  const http = status ? `HTTP ${status}` : null;
  if (!text) return http || "";
  return http && !text.startsWith(http) ? `${http}: ${text}` : text;
}
