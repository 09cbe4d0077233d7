// Landing: the projects the token may read, with their activity; click to open one.

import { api, items } from "./api.js";
import { $, el, fmtAgo, fmtTime, showError } from "./ui.js";

let known = [];
let loading = null;

/** The projects (cached for a few seconds); fills the shared <datalist>. */
export async function projects({ fresh = false } = {}) {
  if (!loading || fresh) {
    loading = api("/v1/projects").then((data) => {
      known = items(data, "projects");
      $("#project-list").replaceChildren(...known.map((p) =>
        el("option", { value: p.name || p.project, label: p.name ? `${p.name} (${p.project})` : undefined })));
      setTimeout(() => { loading = null; }, 5000);
      return known;
    }, (err) => { loading = null; throw err; });
  }
  return loading;
}

export function knownProjects() { return known; }

function link(view, project, text) {
  return el("a", { href: `#/${view}?project=${encodeURIComponent(project)}` }, text);
}

function card(p) {
  const name = p.name || String(p.project);
  const last = p.last_activity_at ?? p.updated_at;
  return el("article", { class: "card project", dataset: { project: p.project } },
    el("h2", {}, link("conversations", name, name)),
    el("p", { class: "mono muted key" }, p.project),
    el("dl", { class: "counts" },
      el("div", {}, el("dt", {}, "Threads"), el("dd", {}, String(p.thread_count ?? 0))),
      el("div", {}, el("dt", {}, "Messages"), el("dd", {}, String(p.message_count ?? 0))),
      el("div", {}, el("dt", {}, "Workflows"), el("dd", {}, String(p.workflow_count ?? 0)))),
    el("p", { class: "muted" }, "Last activity ", el("time", { datetime: last, title: fmtTime(last) }, fmtAgo(last))),
    el("p", { class: "links" },
      link("conversations", name, "Conversations"), " · ", link("workflows", name, "Workflows"),
      " · ", link("jobs", name, "Jobs"), " · ", link("events", name, "Events")));
}

export function init() {
  $("#project-open").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = $("#project-open-input").value.trim();
    if (value) location.hash = `#/conversations?project=${encodeURIComponent(value)}`;
  });
}

export async function show() {
  const box = $("#project-cards");
  try {
    // Most recently active first: where an operator is likely headed.
    const last = (p) => new Date(p.last_activity_at ?? p.updated_at ?? 0).getTime();
    const list = [...await projects({ fresh: true })].sort((a, b) => last(b) - last(a));
    box.replaceChildren(...(list.length ? list.map(card)
      : [el("p", { class: "muted" }, "No projects yet: post a message or create a workflow.")]));
  } catch (err) {
    box.replaceChildren();
    showError(err, "Projects");
  }
}
