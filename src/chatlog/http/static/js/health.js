// Health: readiness (projection lag, partitions, Redis) and liveness, refreshed while shown.

import { getToken } from "./api.js";
import { $, el, kv } from "./ui.js";

let timer = null;

export function init() {
  $("#health-refresh").addEventListener("click", refresh);
}

export function show() {
  refresh();
}

export function hide() {
  clearTimeout(timer);
}

async function fetchJson(path) {
  const headers = { Accept: "application/json" };
  if (getToken()) headers.Authorization = `Bearer ${getToken()}`;
  try {
    const res = await fetch(path, { headers, cache: "no-store" });
    const text = await res.text();
    let body;
    try { body = JSON.parse(text); } catch { body = { body: text.slice(0, 500) }; }
    return { ok: res.ok, status: res.status, body };
  } catch (err) {
    return { ok: false, status: 0, body: { error: `server unreachable: ${err.message}` } };
  }
}

/** Find the first value under any of the given keys, anywhere in a JSON document. */
function find(obj, keys) {
  if (!obj || typeof obj !== "object") return undefined;
  for (const k of keys) if (k in obj) return obj[k];
  for (const v of Object.values(obj)) {
    const got = find(v, keys);
    if (got !== undefined) return got;
  }
  return undefined;
}

function text(v) {
  if (v === undefined) return "–";
  if (v === null) return "none";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

async function refresh() {
  clearTimeout(timer);
  const [ready, live] = await Promise.all([fetchJson("/readyz"), fetchJson("/healthz")]);
  for (const [id, r] of [["ready", ready], ["live", live]]) {
    const badge = $(`#${id}-badge`);
    badge.dataset.ok = String(r.ok);
    badge.textContent = r.ok ? `ok (${r.status})` : `not ok (${r.status || "no answer"})`;
    $(`#${id}-body`).replaceChildren(kv(r.body));
  }
  const doc = { ...live.body, ...ready.body };
  const parts = find(doc, ["partitions"]);
  const rows = [
    ["Ready", find(doc, ["ready"])],
    ["Redis", find(doc, ["redis", "redis_status", "store"])],
    ["Partitions", Array.isArray(parts) ? parts.length : parts],
    ["Projection caught up", find(doc, ["caught_up"])],
    ["Projection lag (events)", find(doc, ["events_behind", "lag_events", "positions_behind", "behind"])],
    ["Projection lag (seconds)", find(doc, ["seconds_behind", "lag_seconds"])],
  ];
  $("#health-summary").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, text(v))]));
  $("#health-partitions").replaceChildren(...(Array.isArray(parts) && parts.length ? [partitionTable(parts)] : []));
  if (!$("#view-health").hidden) timer = setTimeout(refresh, 2000);
}

function partitionTable(parts) {
  const cols = [...new Set(parts.flatMap((p) => Object.keys(p || {})))];
  return el("table", { class: "partitions" },
    el("caption", { class: "visually-hidden" }, "Projection per partition"),
    el("thead", {}, el("tr", {}, cols.map((c) => el("th", { scope: "col" }, c.replaceAll("_", " "))))),
    el("tbody", {}, parts.map((p) => el("tr", {}, cols.map((c) => el("td", { class: "mono" }, text(p?.[c])))))));
}
