// Small DOM helpers and the page-wide alert.

export const $ = (sel, root = document) => root.querySelector(sel);

/** Create an element: el("li", {class: "x", dataset: {a: 1}}, "text", child). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

let alertTimer = null;

/** Show an error (ApiError or any Error) in the page's alert box. */
export function showError(err, context = "") {
  const box = $("#alert");
  const msg = err && err.message ? err.message : String(err);
  $("#alert-text").textContent = context ? `${context}: ${msg}` : msg;
  box.dataset.status = err && err.status !== undefined ? String(err.status) : "";
  box.hidden = false;
  clearTimeout(alertTimer);
  if (!(err && err.refused)) alertTimer = setTimeout(clearError, 15000);
}

export function clearError() {
  $("#alert").hidden = true;
  $("#alert-text").textContent = "";
}

document.addEventListener("DOMContentLoaded", () => {
  $("#alert-close")?.addEventListener("click", clearError);
});

// One formatter each, made once: building an Intl formatter per call (what
// toLocaleString does) cost more than rendering the rows themselves.
const DATE_TIME = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "numeric", day: "numeric", hour: "2-digit", minute: "2-digit",
  second: "2-digit", hour12: false,
});
const TIME = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
});

export function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return DATE_TIME.format(d);
}

export function fmtShortTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return `${TIME.format(d)}.${String(d.getMilliseconds()).padStart(3, "0")}`;
}

/** Render any JSON value as nested definition lists. */
export function kv(value) {
  if (value === null || typeof value !== "object") return el("span", {}, String(value));
  if (Array.isArray(value)) {
    if (value.every((v) => v === null || typeof v !== "object")) return el("span", {}, value.join(", "));
    return el("ol", {}, value.map((v) => el("li", {}, kv(v))));
  }
  const dl = el("dl", { class: "kv" });
  for (const [k, v] of Object.entries(value)) dl.append(el("dt", {}, k), el("dd", {}, kv(v)));
  return dl;
}

/** "9 min 47 s", "2 h 5 min", "12 s": a duration a person reads at a glance. */
export function fmtDuration(seconds) {
  let s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400); s -= d * 86400;
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  if (d) return `${d} d ${h} h`;
  if (h) return `${h} h ${m} min`;
  if (m) return `${m} min ${s} s`;
  return `${s} s`;
}

/** "3 min ago", "in 2 h": relative to now. */
export function fmtAgo(iso) {
  if (!iso) return "";
  const t = new Date(iso).getTime();
  if (Number.isNaN(t)) return String(iso);
  const diff = (Date.now() - t) / 1000;
  if (Math.abs(diff) < 5) return "just now";
  return diff > 0 ? `${fmtDuration(diff)} ago` : `in ${fmtDuration(-diff)}`;
}

/** A state name as people write it: "awaiting_approval" -> "awaiting approval". */
export function human(name) {
  return String(name ?? "").replaceAll("_", " ");
}

/** The colour family of a workflow or job state. */
export function stateKind(state) {
  const s = String(state || "");
  if (/wait|await|pending|created|requested/.test(s)) return "wait";
  if (/fail|timed_out|cancel|reject|dead/.test(s)) return "bad";
  if (/running|started/.test(s)) return "run";
  return "ok";
}
