// Event browser: newest first, paged by cursor, following live appends at the top.
//
// It opens with GET /v1/events?before=end (one backward read: the first paint does
// not depend on the log's length). "Older" asks for the page before the current
// page's cursor; "Newer" returns to the page it came from (a stack of cursors), so
// paging back and forth shows no gap and no repeat. On the newest page an
// EventSource resumes exactly after the page (its newer_cursor) and each new event
// is inserted at the top; the rows being read stay where they are (the page scrolls
// by the inserted height), and a pill says how many arrived above.

import { api, ApiError, getToken, items, query, vocabulary } from "./api.js";
import { jsonView } from "./json.js";
import { projects } from "./projects.js";
import { saveParams } from "./state.js";
import { $, el, fmtShortTime, fmtTime, showError } from "./ui.js";

const PAGE = 50;
const MAX_LIVE = 500;   // live rows inserted before the view asks to reload the newest page

let filters = { project: "", thread_id: "", workflow_id: "", types: "" };
let stack = ["end"];    // the `before` cursor of each page from the newest to the one shown
let page = null;        // {cursor, has_more, newer_cursor}
let es = null;
let cursor = null;      // the stream's resume cursor (the last id received)
let seen = new Set();
let live = 0;           // rows inserted live since the page loaded
let duplicates = 0;
let generation = 0;
let retryTimer = null;
let failures = 0;
let visible = false;

export function init() {
  $("#events-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    filters = {
      project: f.get("project").trim(), thread_id: f.get("thread_id").trim(),
      workflow_id: f.get("workflow_id").trim(), types: f.get("types"),
    };
    stack = ["end"];
    save();
    load();
  });
  $("#ev-reset").addEventListener("click", () => {
    filters = { project: "", thread_id: "", workflow_id: "", types: "" };
    fillForm();
    stack = ["end"];
    save();
    load();
  });
  $("#ev-older").addEventListener("click", () => {
    if (!page || !page.has_more) return;
    stack.push(page.cursor);
    save();
    load();
  });
  $("#ev-newer").addEventListener("click", () => {
    if (stack.length <= 1) return;
    stack.pop();
    save();
    load();
  });
  $("#ev-newest").addEventListener("click", () => {
    stack = ["end"];
    save();
    load();
  });
  $("#ev-new-above").addEventListener("click", () => {
    if (live >= MAX_LIVE) { stack = ["end"]; load(); return; }
    $("#ev-table").scrollIntoView({ block: "start" });
    $("#ev-new-above").hidden = true;
  });
  $("#ev-rows").addEventListener("click", (e) => {
    const button = e.target.closest("button.expand");
    if (button) toggle(button);
  });
  window.addEventListener("scroll", updatePill, { passive: true });
  vocabulary().then((v) => {
    const select = $("#ev-types");
    select.append(...v.event_types.map((t) => el("option", { value: t }, t)));
    select.value = filters.types;
  }, () => {});
}

function fillForm() {
  for (const [k, v] of Object.entries(filters)) $(`#events-form [name="${k}"]`).value = v;
}

function save() {
  const before = stack[stack.length - 1];
  saveParams("events", { ...filters, before: before === "end" ? "" : before });
}

export function show(params) {
  visible = true;
  const next = {
    project: params.project || "", thread_id: params.thread_id || params.thread || "",
    workflow_id: params.workflow_id || params.workflow || "", types: params.types || "",
  };
  const before = params.before || "end";
  const changed = JSON.stringify(next) !== JSON.stringify(filters) || before !== stack[stack.length - 1];
  filters = next;
  if (changed) stack = before === "end" ? ["end"] : ["end", before];
  fillForm();
  projects().catch(() => {});
  if (changed || !page || !es) load();
}

export function hide() {
  visible = false;
  stopStream();
}

function setStatus(state, text) {
  const s = $("#ev-status");
  s.dataset.state = state;
  s.textContent = text;
}

function stopStream() {
  generation++;
  clearTimeout(retryTimer);
  if (es) { es.close(); es = null; }
}

async function load() {
  stopStream();
  const gen = generation;
  const before = stack[stack.length - 1];
  setStatus("loading", "loading…");
  let data;
  try {
    data = await api(`/v1/events${query({ ...filters, before, limit: PAGE })}`);
  } catch (err) {
    if (gen !== generation) return;
    setStatus(err instanceof ApiError && err.refused ? "refused" : "error", "stopped");
    showError(err, "Events");
    return;
  }
  if (gen !== generation) return;
  page = data;
  seen = new Set();
  live = 0;
  duplicates = 0;
  const events = items(data, "events");
  for (const ev of events) seen.add(key(ev));
  $("#ev-rows").replaceChildren(...events.map(row));
  $("#ev-empty").hidden = events.length > 0;
  $("#ev-table").dataset.duplicates = "0";
  $("#ev-new-above").hidden = true;
  const top = stack.length === 1;
  $("#ev-newer").disabled = top;
  $("#ev-newest").disabled = top;
  $("#ev-older").disabled = !data.has_more;
  $("#ev-page").textContent = top ? `newest ${events.length}` : `page ${stack.length} (older)`;
  if (!performance.getEntriesByName("chatlog:first-rows").length) performance.mark("chatlog:first-rows");
  if (top && visible) {
    cursor = data.newer_cursor;
    failures = 0;
    open(gen);
  } else {
    setStatus("paused", "paused: viewing older events");
  }
}

function key(ev) {
  return `${ev.partition ?? 0}:${ev.position}`;
}

function streamUrl() {
  return `/v1/events/stream${query({ ...filters, after: cursor || undefined, access_token: getToken() || undefined })}`;
}

function open(gen) {
  if (gen !== generation) return;
  const source = new EventSource(streamUrl());
  es = source;
  source.onopen = () => {
    if (gen !== generation) return;
    failures = 0;
    setStatus("live", "live");
  };
  source.onmessage = (e) => {
    if (gen !== generation) return;
    let ev;
    try { ev = JSON.parse(e.data); } catch { return; }
    if (e.lastEventId) cursor = e.lastEventId;
    insertLive([ev]);
  };
  source.onerror = () => {
    if (gen !== generation) return;
    source.close();
    es = null;
    setStatus("reconnecting", "reconnecting…");
    recover(gen);
  };
}

/** The stream failed: find out why (410, refused) or reopen it after a pause. */
async function recover(gen) {
  failures++;
  try {
    await api(`/v1/events${query({ ...filters, after: cursor || undefined, limit: 1 })}`);
  } catch (err) {
    if (gen !== generation) return;
    if (err instanceof ApiError && err.status === 410) { load(); return; } // trimmed: start afresh
    if (err instanceof ApiError && (err.refused || err.status === 400)) {
      setStatus(err.refused ? "refused" : "error", "stopped");
      showError(err, "Events");
      return;
    }
  }
  if (gen !== generation) return;
  retryTimer = setTimeout(() => open(gen), Math.min(250 * 2 ** failures, 3000));
}

/** The first row whose bottom is below the top of the window: the one being read. */
function anchorRow() {
  for (const tr of $("#ev-rows").children) {
    if (tr.getBoundingClientRect().bottom > 0) return tr;
  }
  return null;
}

function insertLive(events) {
  const rows = $("#ev-rows");
  const anchor = anchorRow();
  const before = anchor ? anchor.getBoundingClientRect().top : 0;
  for (const ev of events) {
    const k = key(ev);
    if (seen.has(k)) { duplicates++; continue; }
    if (live >= MAX_LIVE) break;
    seen.add(k);
    live++;
    const tr = row(ev);
    tr.classList.add("fresh");
    rows.prepend(tr);
  }
  $("#ev-table").dataset.duplicates = String(duplicates);
  $("#ev-empty").hidden = rows.childElementCount > 0;
  if (anchor) {
    const moved = anchor.getBoundingClientRect().top - before;
    if (moved) window.scrollBy(0, moved);
  }
  updatePill();
}

function updatePill() {
  const pill = $("#ev-new-above");
  if (live >= MAX_LIVE) {
    pill.hidden = false;
    pill.textContent = `More than ${MAX_LIVE} new events: show the newest`;
    return;
  }
  const above = [...$("#ev-rows").querySelectorAll("tr.fresh")]
    .filter((tr) => tr.getBoundingClientRect().bottom <= 0).length;
  pill.hidden = above === 0;
  pill.textContent = `${above} new event${above === 1 ? "" : "s"} above`;
}

function summary(ev) {
  const d = ev.data || {};
  if (ev.type === "message.appended") return `${d.role ?? "?"}: ${d.content ?? ""}`;
  if (d.reason) return d.reason;
  if (d.prompt) return d.prompt;
  const text = JSON.stringify(d);
  return text === "{}" ? "" : text;
}

/** Each row keeps its event: the whole of it, for the JSON viewer. */
const rowEvents = new WeakMap();

function row(ev) {
  const tr = rowOf(ev);
  rowEvents.set(tr, ev);
  return tr;
}

function rowOf(ev) {
  const id = `ev-${(ev.partition ?? 0)}-${ev.position}`.replace(/[^\w-]/g, "_");
  return el("tr", { class: "event", dataset: { position: ev.position ?? "", type: ev.type ?? "", cursor: ev.cursor ?? "" } },
    el("td", {}, el("button", {
      type: "button", class: "expand", "aria-expanded": "false", dataset: { detail: `${id}-json` },
      "aria-label": `Show event ${ev.position} whole`,
    }, "▸")),
    el("td", { class: "mono nowrap pos wide" }, ev.position ?? ""),
    el("td", { class: "nowrap", title: fmtTime(ev.time) }, fmtShortTime(ev.time)),
    el("td", { class: "nowrap type" }, ev.type ?? "",
      el("span", { class: "narrow-only sub" }, summary(ev))),
    el("td", { class: "wide", title: ev.project ?? "" }, ev.project_name || ev.project || ""),
    el("td", { class: "mono wide agg", title: `${ev.aggregate_type ?? ""} ${ev.aggregate_id ?? ""}` },
      `${ev.aggregate_type ?? ""} ${ev.aggregate_id ?? ""}`),
    el("td", { class: "wide" }, ev.version ?? ""),
    el("td", { class: "data wide-only" }, summary(ev)));
}

function toggle(button) {
  const tr = button.closest("tr");
  const expanded = button.getAttribute("aria-expanded") === "true";
  if (expanded) {
    tr.nextElementSibling?.classList.contains("json-row") && tr.nextElementSibling.remove();
    button.setAttribute("aria-expanded", "false");
    button.removeAttribute("aria-controls");
    button.textContent = "▸";
    return;
  }
  const ev = findEvent(tr);
  const detail = el("tr", { class: "json-row", id: button.dataset.detail },
    el("td", { colspan: "8" }, jsonView(ev, `Event ${ev.position}`)));
  tr.after(detail);
  button.setAttribute("aria-controls", button.dataset.detail);
  button.setAttribute("aria-expanded", "true");
  button.textContent = "▾";
}

function findEvent(tr) {
  return rowEvents.get(tr) ?? {};
}
