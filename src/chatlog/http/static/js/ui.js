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

export function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleString(undefined, { hour12: false });
}

export function fmtShortTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleTimeString(undefined, { hour12: false }) + "." +
    String(d.getMilliseconds()).padStart(3, "0");
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
