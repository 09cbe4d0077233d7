// Workflows: list, state, a live countdown to the wait's deadline, history, actions.

import { api, ApiError, items, projectPath, query, vocabulary } from "./api.js";
import { saveParams } from "./state.js";
import { $, el, fmtTime, showError, clearError } from "./ui.js";

let TERMINAL = new Set(); // the server's terminal_states (GET /v1/vocabulary)
const POLL_MS = 1000;
const LIST_EVERY = 5;    // the list is refreshed every 5th poll; the open workflow every poll
const LIST_STATES = 20;
const LIST_MAX = 200;

let project = "";
let workflow = "";
let current = null;     // the last workflow answer
let pollTimer = null;
let tickTimer = null;
let visible = false;
let listEndpoint = true; // false once the server says it has no workflow listing
let polls = 0;
let refreshGen = 0;

function save() {
  saveParams("workflows", { project, workflow });
}

export function init() {
  vocabulary().then((v) => { TERMINAL = new Set(v.terminal_states); }).catch(() => {});
  $("#wf-project-form").addEventListener("submit", (e) => {
    e.preventDefault();
    project = $("#wf-project").value.trim();
    workflow = "";
    current = null;
    polls = 0;
    save();
    refresh();
  });
  $("#wf-create-form").addEventListener("submit", (e) => {
    e.preventDefault();
    create();
  });
}

export function show(params) {
  visible = true;
  project = params.project || "";
  workflow = params.workflow || "";
  $("#wf-project").value = project;
  polls = 0;
  save();
  refresh();
  clearInterval(tickTimer);
  tickTimer = setInterval(tick, 100);
}

export function hide() {
  visible = false;
  clearTimeout(pollTimer);
  clearInterval(tickTimer);
}

function stateOf(wf) {
  return String(wf?.state ?? wf?.status ?? "unknown").toLowerCase();
}

function kind(state) {
  if (state.includes("wait") || state.includes("await") || state === "created") return "wait";
  if (["failed", "timed_out", "cancelled", "rejected"].includes(state)) return "bad";
  return "ok";
}

async function refresh() {
  clearTimeout(pollTimer);
  if (!project) {
    $("#wf-list").replaceChildren(el("li", { class: "muted" }, "Pick a project."));
    renderDetail(null);
    return;
  }
  const gen = ++refreshGen;
  const withList = polls++ % LIST_EVERY === 0;
  await Promise.all([withList ? loadList() : null, loadDetail()]);
  // Only the latest refresh schedules the next one: one polling loop at a time.
  if (visible && gen === refreshGen) pollTimer = setTimeout(refresh, POLL_MS);
}

async function loadList() {
  let list = null;
  if (listEndpoint) {
    try {
      list = items(await api(`${projectPath(project)}/workflows`), "workflows");
    } catch (err) {
      // 404/405: this server has no workflow listing; use the log instead.
      if (err instanceof ApiError && err.status >= 400 && err.status < 500 && !err.refused) {
        listEndpoint = false;
      } else { showError(err, "Workflows"); return; }
    }
  }
  if (list === null) {
    // No listing endpoint: find workflows from their creation events.
    try {
      // Page through the creations (oldest first); keep the newest LIST_MAX.
      let created = [];
      let after;
      for (let page = 0; page < 20; page++) {
        const data = await api(`/v1/events${query({ project, types: "workflow.created", limit: 1000, after })}`);
        created = created.concat(items(data, "events")).slice(-LIST_MAX);
        after = data.cursor;
        if (!data.has_more) break;
      }
      list = created.reverse().map((ev) => ({
        workflow_id: ev.aggregate_id, name: ev.data?.name, created_at: ev.time,
      }));
      // The newest few get their state too (one GET each).
      const states = await Promise.allSettled(list.slice(0, LIST_STATES).map((wf) =>
        api(`${projectPath(project)}/workflows/${encodeURIComponent(wf.workflow_id)}`)));
      states.forEach((r, i) => { if (r.status === "fulfilled") Object.assign(list[i], { state: r.value.state }); });
    } catch (err) {
      showError(err, "Workflows");
      return;
    }
  }
  $("#wf-list").replaceChildren(...(list.length ? list.map(listItem)
    : [el("li", { class: "muted" }, "No workflows yet.")]));
}

function listItem(wf) {
  const id = wf.workflow_id ?? wf.id;
  const state = wf.state ? stateOf(wf) : "";
  const button = el("button", {
    type: "button", dataset: { workflowId: id },
    "aria-current": id === workflow ? "true" : undefined,
    onclick: () => { workflow = id; save(); markCurrent(); refresh(); },
  },
  el("span", { class: "title mono" }, wf.name ? `${wf.name} · ${id}` : id),
  el("span", { class: "meta" },
    el("span", { class: "wf-state" }, state.replaceAll("_", " ")),
    state ? " · " : "", fmtTime(wf.updated_at ?? wf.updated_ms ?? wf.created_at)));
  return el("li", {}, button);
}

function markCurrent() {
  for (const b of document.querySelectorAll("#wf-list button")) {
    if (b.dataset.workflowId === workflow) b.setAttribute("aria-current", "true");
    else b.removeAttribute("aria-current");
  }
}

async function loadDetail() {
  if (!workflow) { renderDetail(null); return; }
  const want = workflow;
  try {
    const wf = await api(`${projectPath(project)}/workflows/${encodeURIComponent(want)}`);
    if (want !== workflow) return;
    renderDetail(wf);
  } catch (err) {
    if (want === workflow) { renderDetail(null); showError(err, `Workflow ${want}`); }
  }
}

function history(wf) {
  return Array.isArray(wf?.history) ? wf.history : [];
}

function failureReason(wf) {
  if (wf.reason) return wf.reason;
  if (wf.error) return wf.error;
  const h = history(wf);
  for (let i = h.length - 1; i >= 0; i--) {
    const d = h[i].data || {};
    if (d.reason) return d.reason;
  }
  return "";
}

function renderDetail(wf) {
  current = wf;
  $("#wf-detail").hidden = !wf;
  if (!wf) return;
  const state = stateOf(wf);
  $("#wf-events").href = `#/events?${new URLSearchParams({ project, workflow_id: wf.id ?? workflow })}`;
  $("#wf-title").textContent = [wf.name, wf.workflow_id ?? wf.id ?? workflow].filter(Boolean).join(" · ");
  const badge = $("#wf-state");
  const timedOut = state === "timed_out" || history(wf).some((h) => h.type === "workflow.timed_out");
  badge.textContent = timedOut && state === "failed" ? "timed out (failed)" : state.replaceAll("_", " ");
  badge.dataset.kind = kind(state);
  badge.dataset.state = state;
  const reason = $("#wf-reason");
  const why = ["failed", "timed_out", "cancelled", "rejected"].includes(state) ? failureReason(wf) : "";
  reason.hidden = !why;
  reason.textContent = why ? `${timedOut ? "Timed out" : "Reason"}: ${why}` : "";
  $("#wf-deadline").textContent = wf.deadline && !TERMINAL.has(state) ? fmtTime(wf.deadline) : "none";
  renderActions(state);
  $("#wf-history").replaceChildren(...history(wf).map((h) => el("tr", { dataset: { type: h.type ?? "" } },
    el("td", {}, h.version ?? ""),
    el("td", {}, fmtTime(h.time)),
    el("td", {}, h.type ?? h.state ?? ""),
    el("td", { class: "details" }, details(h.data)))));
  // Keep the list's state of this workflow in step with the detail.
  const item = document.querySelector(`#wf-list button[data-workflow-id="${CSS.escape(String(wf.id ?? workflow))}"] .wf-state`);
  if (item) item.textContent = state.replaceAll("_", " ");
  tick();
}

function tick() {
  const out = $("#wf-countdown");
  const wf = current;
  if (!wf || !wf.deadline || TERMINAL.has(stateOf(wf))) { out.textContent = ""; return; }
  const left = (new Date(wf.deadline).getTime() - Date.now()) / 1000;
  out.textContent = left > 0 ? `times out in ${left.toFixed(1)} s` : "deadline passed — timing out…";
}

function renderActions(state) {
  const box = $("#wf-actions");
  const buttons = [];
  const act = (label, path, body, cls) => el("button", {
    type: "button", class: cls, onclick: () => action(path, body()),
  }, label);
  const comment = () => $("#wf-comment").value.trim();
  if (state === "created" || (state.includes("wait") && state.includes("start"))) {
    buttons.push(act("Start", "start", () => ({}), "ok"));
  }
  if (state.includes("approval") && !TERMINAL.has(state)) {
    buttons.push(act("Approve", "approval", () => ({ approved: true, comment: comment() }), "ok"));
    buttons.push(act("Reject", "approval", () => ({ approved: false, comment: comment() }), "danger"));
  }
  if (["running", "approved", "rejected", "started"].includes(state)) {
    buttons.push(act("Request approval", "approval-requests", () => ({})));
    buttons.push(act("Complete", "complete", () => ({})));
    buttons.push(act("Fail", "fail", () => ({ reason: comment() || "failed from the console" }), "danger"));
  }
  if (!TERMINAL.has(state)) {
    buttons.push(act("Cancel", "cancel", () => ({ reason: comment() || "cancelled from the console" }), "danger"));
  }
  const showComment = buttons.length > 0;
  $("#wf-comment").hidden = !showComment;
  $("#wf-comment-label").hidden = !showComment;
  // Keep focus on a button that stays, so keyboard users do not lose their place.
  const focused = document.activeElement && box.contains(document.activeElement)
    ? document.activeElement.textContent : null;
  box.replaceChildren(...buttons);
  if (focused) [...box.children].find((b) => b.textContent === focused)?.focus();
}

async function action(path, body) {
  try {
    await api(`${projectPath(project)}/workflows/${encodeURIComponent(workflow)}/${path}`, {
      method: "POST", body,
    });
    clearError();
    $("#wf-comment").value = "";
  } catch (err) {
    showError(err, `${path} ${workflow}`);
  }
  polls = 0;
  refresh();
}

async function create() {
  if (!project) { showError(new Error("pick a project first"), "Create workflow"); return; }
  const name = $("#wf-name").value.trim();
  try {
    const res = await api(`${projectPath(project)}/workflows`, { method: "POST", body: name ? { name } : {} });
    workflow = res.workflow_id ?? res.id;
    $("#wf-name").value = "";
    polls = 0;
    save();
    refresh();
  } catch (err) {
    showError(err, "Create workflow");
  }
}

function details(data) {
  if (!data) return "";
  return Object.entries(data)
    .filter(([, v]) => !(v && typeof v === "object" && !Object.keys(v).length))
    .map(([k, v]) => `${k}: ${v && typeof v === "object" ? JSON.stringify(v) : v}`)
    .join(" · ");
}
