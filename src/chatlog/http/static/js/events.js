// Live events: an EventSource on /v1/events/stream with filters.
//
// Exactly once across a dropped connection: the page remembers the last id
// (the log cursor) it received. When the stream fails it closes it, shows
// "reconnecting…", fetches exactly what it missed with GET /v1/events?after=<cursor>
// (paging), then opens a new stream with ?after=<cursor>. Every event is also
// de-duplicated by (partition, position) as a belt-and-braces check; duplicates
// are counted on screen (they should stay 0).

import { api, ApiError, getToken, items, nextCursor, query, vocabulary } from "./api.js";
import { saveParams } from "./state.js";
import { $, el, fmtShortTime, showError } from "./ui.js";

const FETCH_PAGE = 500;
const MAX_ROWS = 5000;

let filters = { project: "", thread_id: "", workflow_id: "", types: "" };
let startAfter = "";
let es = null;
let cursor = null;       // last id received: the position (or cursor) to resume after
let seen = new Set();
let received = 0;
let duplicates = 0;
let generation = 0;      // bumps on every (re)connect so stale callbacks are ignored
let retryTimer = null;

export function init() {
  $("#events-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    filters = {
      project: f.get("project").trim(), thread_id: f.get("thread_id").trim(),
      workflow_id: f.get("workflow_id").trim(), types: f.get("types").replace(/\s+/g, ""),
    };
    startAfter = f.get("after").trim();
    save();
    restart();
  });
  $("#ev-clear").addEventListener("click", () => { $("#ev-rows").replaceChildren(); });
}

function save() {
  saveParams("events", { ...filters, after: startAfter });
}

export function show(params) {
  const next = {
    project: params.project || "", thread_id: params.thread_id || params.thread || "",
    workflow_id: params.workflow_id || params.workflow || "", types: params.types || "",
  };
  const changed = JSON.stringify(next) !== JSON.stringify(filters) || (params.after || "") !== startAfter;
  filters = next;
  startAfter = params.after || "";
  for (const [k, v] of Object.entries(filters)) $(`#events-form [name="${k}"]`).value = v;
  $('#events-form [name="after"]').value = startAfter;
  save();
  const stopped = ["idle", "refused", "error"].includes($("#ev-status").dataset.state);
  if (changed || stopped) restart();
}

export function hide() {}

function setStatus(state, text) {
  const s = $("#ev-status");
  s.dataset.state = state;
  s.textContent = text;
}

function setNote(text, kind = "ok") {
  const note = $("#ev-note");
  note.textContent = text;
  note.dataset.kind = kind;
}

function counters() {
  $("#ev-count").textContent = String(received);
  $("#ev-dups").textContent = String(duplicates);
  $("#ev-last").textContent = cursor || "–";
}

function restart() {
  stop();
  cursor = startAfter || null;
  seen = new Set();
  received = 0;
  duplicates = 0;
  $("#ev-rows").replaceChildren();
  setNote("");
  counters();
  open({ reconnected: false, missed: 0 });
}

function stop() {
  generation++;
  clearTimeout(retryTimer);
  if (es) { es.close(); es = null; }
}

function streamUrl() {
  return `/v1/events/stream${query({ ...filters, after: cursor || undefined, access_token: getToken() || undefined })}`;
}

async function open({ reconnected, missed }) {
  const gen = ++generation;
  setStatus(reconnected ? "reconnecting" : "connecting", reconnected ? "reconnecting…" : "connecting…");
  // Each SSE event is named by its type: listen for every type the server knows.
  let types;
  try {
    types = (await vocabulary()).event_types;
  } catch {
    if (gen === generation) recover(gen, 0);
    return;
  }
  if (gen !== generation) return;
  const source = new EventSource(streamUrl());
  es = source;
  const onEvent = (e) => { if (gen === generation) receive(e); };
  source.onmessage = onEvent;
  for (const t of types) source.addEventListener(t, onEvent);
  source.onopen = () => {
    if (gen !== generation) return;
    if (reconnected) {
      setStatus("live", "live (reconnected)");
      setNote(`reconnected, ${missed} missed event${missed === 1 ? "" : "s"} received`);
    } else {
      setStatus("live", "live");
    }
  };
  source.onerror = () => {
    if (gen !== generation) return;
    // Whatever the browser would do next, take over: close, catch up, reopen.
    source.close();
    es = null;
    recover(gen, 0);
  };
}

async function recover(gen, attempt) {
  if (gen !== generation) return;
  setStatus("reconnecting", "reconnecting…");
  setNote(`connection lost after ${cursor || "the start"}; reconnecting…`, "warn");
  let missed = 0;
  try {
    for (let page = 0; page < 1000; page++) {
      const data = await api(`/v1/events${query({ ...filters, after: cursor || undefined, limit: FETCH_PAGE })}`);
      if (gen !== generation) return;
      const got = items(data, "events");
      for (const ev of got) if (apply(ev)) missed++;
      const next = nextCursor(data);
      if (next) cursor = next;
      else if (got.length) cursor = got[got.length - 1].cursor ?? got[got.length - 1].position;
      counters();
      if (data.has_more === false || (data.has_more === undefined && got.length < FETCH_PAGE)) break;
    }
  } catch (err) {
    if (gen !== generation) return;
    if (err instanceof ApiError && (err.refused || err.status === 400 || err.status === 410)) {
      setStatus(err.refused ? "refused" : "error", err.refused ? "refused" : "stopped");
      setNote("");
      showError(err, "Live events");
      return;
    }
    const delay = Math.min(250 * 2 ** attempt, 3000);
    retryTimer = setTimeout(() => recover(gen, attempt + 1), delay);
    return;
  }
  if (gen !== generation) return;
  open({ reconnected: true, missed });
}

function receive(e) {
  let ev;
  try { ev = JSON.parse(e.data); } catch { return; }
  if (!ev || typeof ev !== "object") return;
  if (!ev.type && e.type !== "message") ev.type = e.type;
  apply(ev);
  if (e.lastEventId) cursor = e.lastEventId;
  else if (ev.cursor || ev.position) cursor = ev.cursor ?? ev.position;
  counters();
}

/** Add one event to the table unless it was seen already; true if added. */
function apply(ev) {
  const key = `${ev.partition ?? 0}:${ev.position}`;
  if (seen.has(key)) {
    duplicates++;
    return false;
  }
  seen.add(key);
  received++;
  const rows = $("#ev-rows");
  rows.append(row(ev));
  while (rows.childElementCount > MAX_ROWS) rows.firstElementChild.remove();
  return true;
}

function summary(ev) {
  const d = ev.data || {};
  if (ev.type === "message.appended") return `${d.role ?? "?"}: ${d.content ?? ""}`;
  if (d.reason) return d.reason;
  return JSON.stringify(d);
}

function row(ev) {
  return el("tr", { class: "event", dataset: { position: ev.position ?? "", type: ev.type ?? "" } },
    el("td", { class: "mono" }, ev.position ?? ""),
    el("td", {}, fmtShortTime(ev.time)),
    el("td", {}, ev.type ?? ""),
    el("td", { title: ev.project ?? "" }, ev.project_name || ev.project || ""),
    el("td", { class: "mono" }, `${ev.aggregate_type ?? ""} ${ev.aggregate_id ?? ""}`),
    el("td", {}, ev.version ?? ""),
    el("td", { class: "data", title: JSON.stringify(ev.data ?? {}) }, summary(ev)));
}
