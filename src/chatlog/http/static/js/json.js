// An expandable JSON viewer built on <details>/<summary>: keyboard and screen-reader
// friendly without any script of its own. Objects and arrays fold; scalars are coloured.

import { el } from "./ui.js";

const OPEN_DEPTH = 2;

function scalar(value) {
  if (value === null) return el("span", { class: "j-null" }, "null");
  switch (typeof value) {
    case "string": return el("span", { class: "j-str" }, JSON.stringify(value));
    case "number": return el("span", { class: "j-num" }, String(value));
    case "boolean": return el("span", { class: "j-bool" }, String(value));
    default: return el("span", {}, String(value));
  }
}

function preview(value) {
  if (Array.isArray(value)) return `[${value.length}]`;
  const keys = Object.keys(value);
  return `{${keys.slice(0, 4).join(", ")}${keys.length > 4 ? ", …" : ""}}`;
}

function node(key, value, depth) {
  const label = key === null ? null : el("span", { class: "j-key" }, `${key}: `);
  if (value === null || typeof value !== "object") {
    return el("li", {}, label, scalar(value));
  }
  const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
  if (!entries.length) return el("li", {}, label, el("span", { class: "j-empty" }, Array.isArray(value) ? "[]" : "{}"));
  const details = el("details", { open: depth < OPEN_DEPTH },
    el("summary", {}, label, el("span", { class: "j-preview" }, preview(value))),
    el("ul", {}, entries.map(([k, v]) => node(k, v, depth + 1))));
  return el("li", {}, details);
}

/** A viewer for ``value``; ``label`` names it for assistive technology. */
export function jsonView(value, label = "JSON") {
  return el("div", { class: "json" },
    el("ul", { class: "j-root", "aria-label": label }, node(null, value, 0)),
    el("button", {
      type: "button", class: "small",
      onclick: (e) => {
        navigator.clipboard?.writeText(JSON.stringify(value, null, 2)).then(() => {
          e.target.textContent = "Copied";
        }, () => {});
      },
    }, "Copy JSON"));
}
