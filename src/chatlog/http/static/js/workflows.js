// Workflows: a list filtered by state and name, searched by id, with counts per
// state; a detail panel with input, result or failure reason, the approval prompt
// beside Approve / Reject, a countdown to the wait's deadline and the history as
// a timeline. States come from GET /v1/vocabulary.

import { api, items, nextCursor, projectPath, query, vocabulary } from "./api.js";
import { jsonView } from "./json.js";
import { projects } from "./projects.js";
import { saveParams } from "./state.js";
import { $, el, clearError, fmtAgo, fmtDuration, fmtTime, human, showError, stateKind } from "./ui.js";

const POLL_MS = 1000;
const LIST_EVERY = 5;   // the list is refreshed every 5th poll; the open workflow every poll
const PAGE = 50;

let params = { project: "", state: "", name: "", q: "", workflow: "" };
let vocab = { workflow_states: [], terminal_states: [] };
let current = null;     // the open workflow's last answer
let listCursor = null;
let pollTimer = null;
let tickTimer = null;
let visible = false;
let polls = 0;
let refreshGen = 0;

const idOf = (wf) => wf?.workflow_id ?? wf?.id ?? "";

function save() {
  saveParams("workflows", params);
}

export function init() {
  $("#wf-filter").addEventListener("submit", (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    const project = f.get("project").trim();
    if (project !== params.project) params.workflow = "";
    params = { ...params, project, name: f.get("name").trim(), q: f.get("q").trim() };
    polls = 0;
    save();
    refresh({ searched: true });
  });
  $("#wf-create-form").addEventListener("submit", (e) => {
    e.preventDefault();
    create();
  });
  $("#wf-more").addEventListener("click", () => loadList({ more: true }));
  $("#wf-approve").addEventListener("click", () => decide(true));
  $("#wf-reject").addEventListener("click", () => decide(false));
  vocabulary().then((v) => { vocab = v; renderChips({}); }, () => {});
}

export function show(p) {
  visible = true;
  params = {
    project: p.project || "", state: p.state || "", name: p.name || "", q: p.q || "",
    workflow: p.workflow || "",
  };
  $("#wf-project").value = params.project;
  $("#wf-name-filter").value = params.name;
  $("#wf-search").value = params.q;
  projects().catch(() => {});
  polls = 0;
  save();
  refresh({ searched: Boolean(params.q) });
  clearInterval(tickTimer);
  tickTimer = setInterval(tick, 1000);
}

export function hide() {
  visible = false;
  clearTimeout(pollTimer);
  clearInterval(tickTimer);
}

const stateOf = (wf) => String(wf?.state ?? "unknown");
const terminal = (state) => vocab.terminal_states.includes(state);

async function refresh({ searched = false } = {}) {
  clearTimeout(pollTimer);
  if (!params.project) {
    $("#wf-list").replaceChildren(el("li", { class: "muted" }, "Pick a project."));
    renderChips({});
    renderDetail(null);
    return;
  }
  const gen = ++refreshGen;
  const withList = polls++ % LIST_EVERY === 0;
  await Promise.all([withList ? loadList({ searched }) : null, loadDetail()]);
  // Only the latest refresh schedules the next one: one polling loop at a time.
  if (visible && gen === refreshGen) pollTimer = setTimeout(refresh, POLL_MS);
}

function renderChips(counts) {
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  const chip = (state, label, n) => el("button", {
    type: "button", class: "chip", dataset: { state, kind: state ? stateKind(state) : "" },
    "aria-pressed": String(params.state === state),
    onclick: () => { params.state = state; polls = 0; save(); refresh(); },
  }, label, " ", el("span", { class: "count" }, String(n ?? 0)));
  $("#wf-states").replaceChildren(chip("", "All", total),
    ...vocab.workflow_states.map((s) => chip(s, human(s), counts[s])));
}

async function loadList({ more = false, searched = false } = {}) {
  const project = params.project;
  let data;
  try {
    data = await api(`${projectPath(project)}/workflows${query({
      state: params.state, name: params.name, workflow_id: params.q, limit: PAGE,
      cursor: more ? listCursor : undefined,
    })}`);
  } catch (err) {
    if (project !== params.project) return;
    if (!more) {  // not another project's list under this one's name (its ids would 404)
      listCursor = null;
      $("#wf-list").replaceChildren(el("li", { class: "muted" }, "The workflows could not be read."));
      $("#wf-more").hidden = true;
      $("#wf-list-count").textContent = "";
    }
    showError(err, "Workflows");
    return;
  }
  if (project !== params.project) return;
  const list = items(data, "workflows");
  listCursor = nextCursor(data);
  renderChips(data.counts || {});
  const box = $("#wf-list");
  if (more) box.append(...list.map(listItem));
  else {
    const focused = box.contains(document.activeElement) ? document.activeElement.dataset.workflowId : null;
    box.replaceChildren(...(list.length ? list.map(listItem)
      : [el("li", { class: "muted" }, params.q ? `No workflow id starts with “${params.q}”.` : "No workflows.")]));
    if (focused) box.querySelector(`button[data-workflow-id="${CSS.escape(focused)}"]`)?.focus();
  }
  $("#wf-more").hidden = !listCursor;
  const shown = box.querySelectorAll("li.wf").length;
  $("#wf-list-count").textContent = `(${shown}${listCursor ? "+" : ""})`;
  // A search by id that finds it opens it.
  if (searched && params.q) {
    const exact = list.find((wf) => idOf(wf) === params.q) ?? (list.length === 1 ? list[0] : null);
    if (exact) open(idOf(exact));
  }
}

function listItem(wf) {
  const id = idOf(wf);
  const state = stateOf(wf);
  const left = wf.deadline && !terminal(state) ? (new Date(wf.deadline) - Date.now()) / 1000 : null;
  const button = el("button", {
    type: "button", dataset: { workflowId: id },
    "aria-current": id === params.workflow ? "true" : undefined,
    onclick: () => open(id),
  },
  el("span", { class: "title" }, wf.name || "(unnamed)"),
  el("span", { class: "mono small id" }, id),
  el("span", { class: "meta" },
    el("span", { class: "state", dataset: { kind: stateKind(state), state } }, human(state)),
    " ", left !== null && left > 0 ? `times out in ${fmtDuration(left)} · ` : " ",
    `updated ${fmtAgo(wf.updated_at)}`));
  return el("li", { class: "wf" }, button);
}

function open(id) {
  params.workflow = id;
  save();
  for (const b of document.querySelectorAll("#wf-list button")) {
    if (b.dataset.workflowId === id) b.setAttribute("aria-current", "true");
    else b.removeAttribute("aria-current");
  }
  loadDetail().then(() => $("#wf-detail").scrollIntoView?.({ block: "nearest" }));
}

async function loadDetail() {
  const want = params.workflow;
  if (!want || !params.project) { renderDetail(null); return; }
  try {
    const wf = await api(`${projectPath(params.project)}/workflows/${encodeURIComponent(want)}`);
    if (want === params.workflow) renderDetail(wf);
  } catch (err) {
    if (want === params.workflow) { renderDetail(null); showError(err, `Workflow ${want}`); }
  }
}

const history = (wf) => (Array.isArray(wf?.history) ? wf.history : []);

function lastOf(wf, type) {
  const h = history(wf);
  for (let i = h.length - 1; i >= 0; i--) if (h[i].type === type) return h[i];
  return null;
}

function renderDetail(wf) {
  current = wf;
  $("#wf-detail").hidden = !wf;
  if (!wf) return;
  const id = idOf(wf) || params.workflow;
  const state = stateOf(wf);
  $("#wf-title").replaceChildren(wf.name || "(unnamed)", " ", el("span", { class: "mono muted small" }, id));
  const badge = $("#wf-state");
  const timedOut = state === "timed_out" || history(wf).some((h) => h.type === "workflow.timed_out");
  badge.textContent = timedOut && state === "failed" ? "timed out (failed)" : human(state);
  badge.dataset.kind = stateKind(timedOut ? "timed_out" : state);
  badge.dataset.state = state;
  $("#wf-deadline").textContent = wf.deadline && !terminal(state)
    ? `deadline ${fmtTime(wf.deadline)}${wf.awaiting ? ` (awaiting ${human(wf.awaiting)})` : ""}` : "";
  const reason = $("#wf-reason");
  const why = ["failed", "timed_out", "cancelled", "rejected"].includes(state) ? (wf.reason || "") : "";
  reason.hidden = !why;
  reason.textContent = why ? `${timedOut ? "Timed out" : "Reason"}: ${why}` : "";
  // The approval prompt beside the buttons that answer it.
  const asking = state === "awaiting_approval";
  $("#wf-approval").hidden = !asking;
  if (asking) {
    const prompt = lastOf(wf, "workflow.approval_requested")?.data?.prompt;
    $("#wf-prompt").textContent = prompt || "(no prompt given)";
  }
  renderActions(state);
  const input = wf.input && Object.keys(wf.input).length ? wf.input : null;
  $("#wf-input").replaceChildren(input ? jsonView(input, "Workflow input") : el("p", { class: "muted" }, "none"));
  $("#wf-result").replaceChildren(
    wf.result ? jsonView(wf.result, "Workflow result")
      : why ? el("p", { class: "reason" }, why)
        : el("p", { class: "muted" }, terminal(state) ? "none" : "not finished"));
  $("#wf-history").replaceChildren(...history(wf).map(timelineItem));
  $("#wf-events").href = `#/events?${new URLSearchParams({ project: params.project, workflow_id: id })}`;
  const item = document.querySelector(`#wf-list button[data-workflow-id="${CSS.escape(id)}"] .state`);
  if (item) { item.textContent = human(state); item.dataset.kind = stateKind(state); }
  tick();
}

function timelineItem(h) {
  const d = h.data || {};
  const details = Object.entries(d)
    .filter(([k, v]) => k !== "deadline" && !(v && typeof v === "object" && !Object.keys(v).length))
    .map(([k, v]) => `${k}: ${v && typeof v === "object" ? JSON.stringify(v) : v}`).join(" · ");
  const type = String(h.type ?? "");
  return el("li", { dataset: { type, kind: stateKind(type.split(".").pop()) } },
    el("span", { class: "when", title: fmtTime(h.time) }, fmtTime(h.time)),
    el("strong", {}, human(type.replace(/^workflow\./, "").replace(".", " "))),
    details ? el("span", { class: "details" }, details) : "");
}

function tick() {
  const out = $("#wf-countdown");
  const wf = current;
  if (!wf || !wf.deadline || terminal(stateOf(wf))) { out.textContent = ""; return; }
  const left = (new Date(wf.deadline).getTime() - Date.now()) / 1000;
  out.textContent = left > 0 ? `times out in ${fmtDuration(left)}` : "deadline passed: timing out…";
}

function renderActions(state) {
  const buttons = [];
  const act = (label, path, body, cls) => el("button", {
    type: "button", class: cls, onclick: () => action(path, body()),
  }, label);
  const reason = (what) => $("#wf-reason-input").value.trim() || `${what} from the console`;
  if (state === "waiting_for_start") buttons.push(act("Start", "start", () => ({}), "ok"));
  if (["running", "approved", "rejected"].includes(state)) {
    buttons.push(act("Request approval", "approval-requests", () => ({})));
    buttons.push(act("Complete", "complete", () => ({})));
    buttons.push(act("Fail", "fail", () => ({ reason: reason("failed") }), "danger"));
  }
  if (!terminal(state) && state !== "unknown") {
    buttons.push(act("Cancel workflow", "cancel", () => ({ reason: reason("cancelled") }), "danger"));
  }
  const box = $("#wf-actions");
  $("#wf-more-actions").hidden = !buttons.length;
  $("#wf-reason-row").hidden = !buttons.some((b) => b.classList.contains("danger"));
  const focused = box.contains(document.activeElement) ? document.activeElement.textContent : null;
  box.replaceChildren(...buttons);
  if (focused) [...box.children].find((b) => b.textContent === focused)?.focus();
}

async function decide(approved) {
  await action("approval", { approved, comment: $("#wf-comment").value.trim() });
}

async function action(path, body) {
  try {
    await api(`${projectPath(params.project)}/workflows/${encodeURIComponent(params.workflow)}/${path}`, {
      method: "POST", body,
    });
    clearError();
    $("#wf-comment").value = "";
    $("#wf-reason-input").value = "";
  } catch (err) {
    showError(err, `${path} ${params.workflow}`);
  }
  polls = 0;
  refresh();
}

async function create() {
  if (!params.project) { showError(new Error("pick a project first"), "Create workflow"); return; }
  const name = $("#wf-name").value.trim();
  try {
    const res = await api(`${projectPath(params.project)}/workflows`, { method: "POST", body: name ? { name } : {} });
    params.workflow = idOf(res);
    $("#wf-name").value = "";
    polls = 0;
    save();
    refresh();
  } catch (err) {
    showError(err, "Create workflow");
  }
}
