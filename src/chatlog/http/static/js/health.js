// Health: readiness, Valkey / Redis and archive status, and small live charts of
// appends/s, requests/s, p99 latency and projection lag, from GET /v1/stats (sampled
// by the server every second; this view polls it while shown).

import { api, ApiError, getToken } from "./api.js";
import { $, el, kv } from "./ui.js";

const POLL_MS = 1000;
const CHARTS = [
  ["appends_per_s", "Appends per second", (v) => v.toFixed(1)],
  ["requests_per_s", "Requests per second", (v) => v.toFixed(1)],
  ["p99_ms", "p99 latency (ms)", (v) => v.toFixed(1)],
  ["lag_events", "Projection lag (events)", (v) => String(Math.round(v))],
  ["lag_seconds", "Projection lag (seconds)", (v) => v.toFixed(2)],
];

let timer = null;
let charts = null;   // name -> {plot, value}

export function init() {}

export function show() {
  refresh();
}

export function hide() {
  clearTimeout(timer);
}

let chartsReady = null;
let uPlot = null;      // loaded with the first visit of this view, not with the console

async function makeCharts() {
  if (!uPlot) uPlot = (await import("../vendor/uplot/uPlot.esm.js")).default;
  charts = {};
  const made = CHARTS.map(([name, label]) => {
    const value = el("span", { class: "value", dataset: { metric: name } }, "–");
    const target = el("div", { class: "plot", role: "img", "aria-label": `${label}, last two minutes` });
    const fig = el("figure", { class: "chart card" }, el("figcaption", {}, label, " ", value), target);
    return { name, value, target, fig };
  });
  $("#charts").replaceChildren(...made.map((m) => m.fig));
  // Sized from the laid-out grid cell, so a chart never spills out of its card.
  for (const { name, value, target } of made) {
    const plot = new uPlot({
      width: Math.max(200, target.clientWidth), height: 120, legend: { show: false }, cursor: { show: false },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.15)] } },
      axes: [{ stroke: "#444", grid: { stroke: "#eee" }, ticks: { stroke: "#ccc" }, space: 60,
        values: (u, splits) => splits.map((t) => new Date(t * 1000).toLocaleTimeString(undefined, { hour12: false })) },
        { stroke: "#444", grid: { stroke: "#eee" }, ticks: { stroke: "#ccc" }, size: 44 }],
      series: [{}, { stroke: "#0b57d0", width: 2, fill: "rgba(11,87,208,0.08)", points: { show: false } }],
    }, [[], []], target);
    charts[name] = { plot, value, target };
  }
}

function badge(node, ok, text) {
  node.dataset.ok = String(ok);
  node.textContent = text;
}

async function readiness() {
  try {
    const res = await fetch("/readyz", { cache: "no-store", headers: getToken() ? { Authorization: `Bearer ${getToken()}` } : {} });
    const body = await res.json().catch(() => ({}));
    badge($("#ready-badge"), res.ok, res.ok ? "ready" : `not ready (${res.status})`);
    $("#ready-body").replaceChildren(kv(body));
    const parts = body?.projection?.partitions;
    $("#health-partitions").replaceChildren(...(Array.isArray(parts) && parts.length ? [partitionTable(parts)] : []));
  } catch (err) {
    badge($("#ready-badge"), false, "no answer");
  }
}

async function stats() {
  const note = $("#stats-note");
  let doc;
  try {
    doc = await api("/v1/stats");
  } catch (err) {
    if (err instanceof ApiError && err.refused) {
      note.textContent = "The live charts cover every project: they need an admin token.";
    } else {
      note.textContent = `No stats: ${err.message}`;
      badge($("#store-badge"), false, "unknown");
    }
    return;
  }
  note.textContent = `Sampled by the server every ${doc.interval} s; the last ${doc.samples.length} samples.`;
  badge($("#store-badge"), doc.store.status === "ok", doc.store.status);
  $("#store-detail").textContent = doc.store.latency_ms != null ? ` ${doc.store.latency_ms} ms` : ` ${doc.store.detail || ""}`;
  badge($("#archive-badge"), doc.archive.status === "ok" ? true : doc.archive.status === "not configured" ? "na" : false, doc.archive.status);
  $("#archive-detail").textContent = ` ${doc.archive.detail || ""}`;
  chartsReady ??= makeCharts();
  await chartsReady;
  const xs = doc.samples.map((s) => s.time);
  for (const [name, , format] of CHARTS) {
    const ys = doc.samples.map((s) => s[name] ?? null);
    charts[name].plot.setData([xs, ys]);
    const last = ys.filter((v) => v !== null).pop();
    charts[name].value.textContent = last === undefined ? "–" : format(last);
  }
}

async function refresh() {
  clearTimeout(timer);
  await Promise.all([readiness(), stats()]);
  if (!$("#view-health").hidden) timer = setTimeout(refresh, POLL_MS);
}

window.addEventListener("resize", () => {
  if (!charts) return;
  for (const { plot } of Object.values(charts)) plot.setSize({ width: 200, height: 120 });
  for (const { plot, target } of Object.values(charts)) {
    plot.setSize({ width: Math.max(200, target.clientWidth), height: 120 });
  }
});

function text(v) {
  if (v === undefined) return "–";
  if (v === null) return "none";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function partitionTable(parts) {
  const cols = [...new Set(parts.flatMap((p) => Object.keys(p || {})))];
  return el("div", { class: "scroll-x", tabindex: "0", role: "region", "aria-label": "Projection per partition" },
    el("table", { class: "partitions" },
    el("caption", { class: "visually-hidden" }, "Projection per partition"),
    el("thead", {}, el("tr", {}, cols.map((c) => el("th", { scope: "col" }, c.replaceAll("_", " "))))),
      el("tbody", {}, parts.map((p) => el("tr", {}, cols.map((c) => el("td", { class: "mono" }, text(p?.[c]))))))));
}
