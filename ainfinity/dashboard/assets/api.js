// The API client: every call carries the key from sessionStorage as X-API-Key.
// The key never goes into a URL, so it cannot leak through logs or the Referer header.

const KEY_ITEM = "ainfinity.apiKey";

export const API_BASE = document.querySelector('meta[name="ainfinity-api"]').content;
// The OpenAI-compatible routes (chat); they take the same key.
export const OPENAI_BASE = document.querySelector('meta[name="ainfinity-openai"]').content;

export class ApiError extends Error {
  constructor(status, code, msg) {
    super(msg);
    this.status = status;
    this.code = code;
  }
}

export function storedKey() {
  return sessionStorage.getItem(KEY_ITEM);
}

export function storeKey(key) {
  sessionStorage.setItem(KEY_ITEM, key);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY_ITEM);
}

export function authHeaders(key = storedKey()) {
  return key ? { "X-API-Key": key } : {};
}

// Whoever shows the login form listens for this: a 401 anywhere means the key is gone.
export const UNAUTHORIZED_EVENT = "ainfinity:unauthorized";

/** The error an answer carries: `{"detail": {code, msg}}`, or OpenAI's `{"error": {...}}`. */
export async function errorOf(response) {
  let code = "http_" + response.status;
  let msg = response.statusText || "Request failed";
  try {
    const body = await response.json();
    if (body && body.detail && body.detail.code) {
      code = body.detail.code;
      msg = body.detail.msg;
    } else if (body && body.error && body.error.message) {
      code = body.error.code || body.error.type || code;
      msg = body.error.message;
    }
  } catch {
    // Not our JSON error body (a proxy's page, say): keep the status line.
  }
  return new ApiError(response.status, code, msg);
}

/**
 * Request `path` under /api/v1 and return the (ok) response; an error answer throws.
 * `key` overrides the stored key (the login form checks a key before keeping it).
 */
export async function request(path, { method = "GET", accept = "application/json", key, signal } = {}) {
  const response = await fetch(API_BASE + path, {
    method,
    headers: { Accept: accept, ...authHeaders(key) },
    cache: "no-store",
    signal,
  });
  if (!response.ok) {
    const error = await errorOf(response);
    if (response.status === 401 && key === undefined) {
      window.dispatchEvent(new CustomEvent(UNAUTHORIZED_EVENT));
    }
    throw error;
  }
  return response;
}

/** Call `path` under /api/v1 and return its parsed JSON. */
export async function api(path, options = {}) {
  return (await request(path, options)).json();
}

export function jobPath(name) {
  return "/jobs/" + encodeURIComponent(name);
}

/** Model ids hold colons (`ft:base:job:ckpt-10`): quoted whole, like job names. */
export function modelPath(id) {
  return "/models/" + encodeURIComponent(id);
}

/** The dashboard's own links (the hash part of its URL). */
export const jobLink = (name) => "#/jobs/" + encodeURIComponent(name);
export const modelLink = (id) => "#/models/" + encodeURIComponent(id);

// How a job's `model` names a directory rather than an id: `/srv/models/x`, `./x`, `~/x`.
const PATH_LIKE = /^[/.~]/;

/**
 * The id /v1 serves a model's `base_model` under: a built-in, hub or `ft:` id as it is; a model
 * directory by its name (its last path segment), which is how the registry names directories.
 */
export function baseModelId(baseModel) {
  if (!baseModel) return null;
  if (baseModel.startsWith("ft:") || !PATH_LIKE.test(baseModel)) return baseModel;
  const segments = baseModel.split("/").filter((segment) => segment && segment !== ".");
  return segments.length ? segments[segments.length - 1] : null;
}
