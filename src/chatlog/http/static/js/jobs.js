// Jobs: pending, running and dead-lettered jobs of a project, with attempts and last error.

import { api, ApiError, items, nextCursor, projectPath, query } from "./api.js";
import { jsonView } from "./json.js";
import { projects } from "./projects.js";
import { saveParams } from "./state.js";
import { $, el, fmtAgo, fmtTime, human, showError, stateKind } from "./ui.js";

const STATES = [["", "All"], ["pending", "Pending"], ["running", "Running"], ["dead", "Dead-lettered"], ["done", "Done"]];
const PAGE = 100;
const POLL_MS = 3000;

let project = "";
let state = "";
let cursor = null;
let timer = null;
let visible = false;

function save() {
  saveParams("jobs", { project, state });
}

export function init() {
  $("#jobs-form").addEventListener("submit", (e) => {
    e.preventDefault();
    project = $("#jobs-project").value.trim();
    save();
    load();
  });
  $("#jobs-more").addEventListener("click", () => load({ more: true }));
  $("#jobs-rows").addEventListener("click", (e) => {
    const button = e.target.closest("button.expand");
    if (button) toggle(button);
  });
}

export function show(params) {
  visible = true;
  project = params.project || "";
  state = params.state || "";
  $("#jobs-project").value = project;
  projects().catch(() => {});
  save();
  load();
}

export function hide() {
  visible = false;
  clearTimeout(timer);
}

function chips() {
  $("#jobs-states").replaceChildren(...STATES.map(([s, label]) => el("button", {
    type: "button", class: "chip", dataset: { state: s, kind: s ? stateKind(s) : "" },
    "aria-pressed": String(state === s),
    onclick: () => { state = s; save(); load(); },
  }, label)));
}

async function load({ more = false } = {}) {
  clearTimeout(timer);
  chips();
  const note = $("#jobs-note");
  if (!project) {
    note.textContent = "Pick a project to see its jobs.";
    $("#jobs-rows").replaceChildren();
    return;
  }
  const want = `${project}|${state}`;
  let data;
  try {
    data = await api(`${projectPath(project)}/jobs${query({ state, limit: PAGE, cursor: more ? cursor : undefined })}`);
  } catch (err) {
    if (want !== `${project}|${state}`) return;
    if (!more) $("#jobs-rows").replaceChildren();  // not the previous project's jobs
    if (err instanceof ApiError && (err.status === 404 || err.status === 405) && !err.body?.detail?.includes("project")) {
      note.textContent = "This server has no jobs API.";
    } else {
      showError(err, "Jobs");
    }
    return;
  }
  if (want !== `${project}|${state}`) return;
  const jobs = items(data, "jobs");
  cursor = nextCursor(data);
  const rows = $("#jobs-rows");
  // Keep the rows whose JSON is open open across a refresh.
  const open = new Set([...rows.querySelectorAll("button.expand[aria-expanded='true']")].map((b) => b.dataset.job));
  const made = jobs.flatMap((job) => {
    const tr = row(job);
    if (open.has(job.job_id)) return [tr, detail(tr, job)];
    return [tr];
  });
  if (more) rows.append(...made);
  else rows.replaceChildren(...made);
  $("#jobs-more").hidden = !cursor;
  const dead = jobs.filter((j) => j.state === "dead").length;
  note.textContent = jobs.length
    ? `${rows.querySelectorAll("tr.job").length}${cursor ? "+" : ""} job(s)${dead ? `, ${dead} dead-lettered` : ""}`
    : `No ${state ? human(STATES.find(([s]) => s === state)[1].toLowerCase()) + " " : ""}jobs.`;
  if (visible && !more) timer = setTimeout(load, POLL_MS);
}

const jobData = new WeakMap();

function row(job) {
  const tr = el("tr", { class: "job", dataset: { jobId: job.job_id, state: job.state } },
    el("td", {},
      el("button", { type: "button", class: "expand", "aria-expanded": "false", dataset: { job: job.job_id },
        "aria-label": `Show job ${job.job_id} whole` }, "▸"),
      " ", el("span", { class: "mono small" }, job.job_id)),
    el("td", {}, job.kind ?? ""),
    el("td", {}, el("span", { class: "state", dataset: { kind: stateKind(job.state), state: job.state } },
      job.state === "dead" ? "dead-lettered" : human(job.state))),
    el("td", { class: "nowrap" }, `${job.attempts ?? 0} / ${job.max_deliveries ?? "?"}`),
    el("td", { class: "error" }, job.last_error ?? ""),
    el("td", { class: "mono small wide" }, job.workflow_id
      ? el("a", { href: `#/workflows?${new URLSearchParams({ project, workflow: job.workflow_id })}` }, job.workflow_id) : ""),
    el("td", { class: "wide", title: fmtTime(job.updated_at) }, fmtAgo(job.updated_at)));
  jobData.set(tr, job);
  return tr;
}

function detail(tr, job) {
  const button = tr.querySelector("button.expand");
  const id = `job-${String(job.job_id).replace(/[^\w-]/g, "_")}-json`;
  button.setAttribute("aria-expanded", "true");
  button.setAttribute("aria-controls", id);
  button.textContent = "▾";
  return el("tr", { class: "json-row", id }, el("td", { colspan: "7" }, jsonView(job, `Job ${job.job_id}`)));
}

function toggle(button) {
  const tr = button.closest("tr");
  if (button.getAttribute("aria-expanded") === "true") {
    if (tr.nextElementSibling?.classList.contains("json-row")) tr.nextElementSibling.remove();
    button.setAttribute("aria-expanded", "false");
    button.removeAttribute("aria-controls");
    button.textContent = "▸";
    return;
  }
  tr.after(detail(tr, jobData.get(tr) ?? {}));
}
