// The HTTP API client: bearer token from sessionStorage, problem+json errors.

const TOKEN_KEY = "chatlog.token";

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** An error answer of the API (or no answer at all: status 0). */
export class ApiError extends Error {
  constructor(status, title, detail, body) {
    super(detail ? `${title}: ${detail}` : title);
    this.status = status;
    this.title = title;
    this.detail = detail;
    this.body = body;
  }
  get refused() {
    return this.status === 401 || this.status === 403;
  }
}

/** Build a query string from an object, skipping empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

export function projectPath(project) {
  return `/v1/projects/${encodeURIComponent(project)}`;
}

/** fetch() with the token; returns parsed JSON, throws ApiError for non-2xx. */
export async function api(path, { method = "GET", body, signal } = {}) {
  const headers = { Accept: "application/json" };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, {
      method, headers, signal, cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "Server unreachable", `${method} ${path} failed: ${err.message}`);
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = { detail: text.slice(0, 300) }; }
  }
  if (!res.ok) {
    const title = (data && data.title) || res.statusText || "Error";
    let detail = data && (data.detail || data.message);
    if (res.status === 401) detail = `${detail || "a token is required"} — enter an access token above`;
    if (res.status === 403) detail = `${detail || "this token may not do that"} — the token is not allowed here`;
    throw new ApiError(res.status, `${title} (${res.status})`, detail, data);
  }
  return data;
}

/** The list inside a collection answer, whatever the server calls it. */
export function items(data, ...names) {
  if (Array.isArray(data)) return data;
  for (const n of [...names, "items", "data", "results"]) {
    if (data && Array.isArray(data[n])) return data[n];
  }
  return [];
}

/** The cursor for the next page of a collection answer, if any. */
export function nextCursor(data) {
  if (!data || Array.isArray(data)) return null;
  return data.next_cursor ?? data.cursor ?? data.next ?? null;
}

let vocabularyAnswer = null;

/** The server's event types and workflow states (GET /v1/vocabulary), fetched once.
 * The console keeps no copy of these lists: chatlog.events defines them. */
export function vocabulary() {
  if (!vocabularyAnswer) {
    vocabularyAnswer = api("/v1/vocabulary").catch((err) => {
      vocabularyAnswer = null; // ask again next time
      throw err;
    });
  }
  return vocabularyAnswer;
}
