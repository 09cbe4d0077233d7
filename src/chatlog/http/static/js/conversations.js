// Conversations: project picker, conversation list (newest first), thread view, post a message.

import { api, ApiError, items, nextCursor, projectPath, query } from "./api.js";
import { saveParams } from "./state.js";
import { $, el, fmtTime, showError, clearError } from "./ui.js";

const PAGE = 50;
const MSG_PAGE = 200;

let project = "";
let thread = "";
let threadsCursor = null;
let loadSeq = 0;
let knownProjects = [];   // from GET /v1/projects: {project (key), name}
let lastAccepted = null;  // the last append's answer (carries the normalised key)

function save() {
  saveParams("conversations", { project, thread });
}

export function init() {
  $("#project-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = $("#project-input").value.trim();
    if (!value) return;
    project = value;
    thread = "";
    save();
    load();
  });
  $("#new-thread").addEventListener("click", () => {
    thread = "";
    save();
    renderThreadHeader();
    $("#message-list").replaceChildren();
    markCurrent();
    $("#post-content").focus();
  });
  $("#more-threads").addEventListener("click", () => loadThreads({ append: true }));
  $("#post-form").addEventListener("submit", (e) => {
    e.preventDefault();
    post();
  });
  // Ctrl+Enter posts from the text area.
  $("#post-content").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      post();
    }
  });
}

export function show(params) {
  const changed = (params.project || "") !== project || (params.thread || "") !== thread;
  project = params.project || "";
  thread = params.thread || "";
  $("#project-input").value = project;
  loadProjects();
  if (changed || !$("#thread-list").childElementCount) load();
}

export function hide() {}

async function loadProjects() {
  try {
    const data = await api("/v1/projects");
    const list = $("#project-list");
    knownProjects = items(data, "projects");
    projectInfo();
    list.replaceChildren(...knownProjects.map((p) => {
      const name = p.name ?? p.project_name ?? p.display ?? "";
      const key = p.project ?? p.key ?? p.id ?? "";
      return el("option", { value: name || key, label: name && key ? `${name} (${key})` : undefined });
    }));
  } catch (err) {
    if (err instanceof ApiError && err.refused) showError(err, "Projects");
  }
}

async function load({ minPosition } = {}) {
  renderThreadHeader();
  if (!project) {
    $("#project-info").textContent = "Pick a project to see its conversations.";
    $("#thread-list").replaceChildren();
    $("#message-list").replaceChildren();
    return;
  }
  await loadThreads({ minPosition });
  if (thread) await loadMessages({ minPosition });
  else $("#message-list").replaceChildren();
}

/** The identity rule's name key, as far as a browser can tell (NFKC + case fold). */
function nameKey(name) {
  return String(name).normalize("NFKC").toLowerCase().trim();
}

/** Show the project as the server normalised it, if we know it. */
function projectInfo(data) {
  if (!project) return;
  let key = data && (data.project ?? data.project_key);
  let name = data && (data.project_name ?? data.name);
  if (!key && lastAccepted && lastAccepted.for === nameKey(project)) {
    key = lastAccepted.project;
    name = lastAccepted.project_name;
  }
  if (!key) {
    const match = knownProjects.find((p) => String(p.project) === project.toLowerCase()
      || nameKey(p.name ?? "") === nameKey(project));
    if (match) { key = match.project; name = match.name; }
  }
  const info = $("#project-info");
  info.replaceChildren("Project ", el("strong", { id: "project-name" }, name || project));
  if (key) info.append(" — normalised key ", el("code", { id: "project-key" }, key));
  else info.append(el("span", { class: "muted" }, " — no messages yet"));
}

async function loadThreads({ append = false, minPosition } = {}) {
  const seq = ++loadSeq;
  try {
    const data = await api(`${projectPath(project)}/threads${query({
      limit: PAGE, cursor: append ? threadsCursor : undefined, min_position: minPosition,
    })}`);
    if (seq !== loadSeq) return;
    clearError();
    projectInfo(data);
    threadsCursor = nextCursor(data);
    const rows = items(data, "threads").map(threadItem);
    if (append) $("#thread-list").append(...rows);
    else $("#thread-list").replaceChildren(...rows);
    $("#more-threads").hidden = !threadsCursor;
    if (!rows.length && !append) {
      $("#thread-list").append(el("li", { class: "muted" }, "No conversations yet: post the first message."));
    }
    markCurrent();
  } catch (err) {
    if (seq !== loadSeq) return;
    $("#thread-list").replaceChildren();
    $("#project-info").textContent = "";
    showError(err, `Conversations of ${project}`);
  }
}

function threadItem(t) {
  const id = t.thread_id ?? t.id;
  const count = t.message_count ?? t.count ?? t.messages ?? 0;
  const preview = t.last_message_preview ?? t.preview ?? t.last_message ?? "";
  const updated = t.updated_at ?? t.last_message_at ?? t.updated ?? t.last_time ?? t.time;
  const title = t.title ?? t.name ?? id;
  const button = el("button", {
    type: "button", dataset: { threadId: id },
    onclick: () => { thread = id; save(); markCurrent(); loadMessages(); },
  },
  el("span", { class: "title mono" }, title),
  el("span", { class: "preview" }, preview),
  el("span", { class: "meta" },
    el("span", { class: "count" }, `${count} message${count === 1 ? "" : "s"}`),
    updated ? ` · ${fmtTime(updated)}` : ""));
  return el("li", { class: "thread" }, button);
}

function markCurrent() {
  for (const b of document.querySelectorAll("#thread-list button")) {
    if (b.dataset.threadId === thread) b.setAttribute("aria-current", "true");
    else b.removeAttribute("aria-current");
  }
}

function renderThreadHeader() {
  $("#thread-title").textContent = thread || "(new thread)";
  $("#post-legend").textContent = thread ? "Post a message to this thread" : "Start a new thread";
}

async function loadMessages({ minPosition } = {}) {
  renderThreadHeader();
  const want = thread;
  const list = [];
  let after = 0;
  try {
    for (let page = 0; page < 50; page++) {
      const data = await api(`${projectPath(project)}/threads/${encodeURIComponent(want)}/messages${query({
        after_version: after || undefined, limit: MSG_PAGE, min_position: page === 0 ? minPosition : undefined,
      })}`);
      const got = items(data, "messages");
      list.push(...got);
      if (got.length < MSG_PAGE) break;
      after = Math.max(...got.map((m) => m.version ?? 0));
    }
  } catch (err) {
    if (want === thread) {
      $("#message-list").replaceChildren();
      showError(err, `Thread ${want}`);
    }
    return;
  }
  if (want !== thread) return;
  $("#message-list").replaceChildren(...list.map((m) => el("li", {
    class: "message", dataset: { version: m.version ?? "", messageId: m.message_id ?? m.id ?? "" },
  },
  el("div", { class: "meta" },
    el("span", { class: "role" }, m.role ?? "?"),
    `#${m.version ?? "?"} · ${fmtTime(m.time ?? m.created_at ?? m.appended_at)}`),
  el("div", { class: "content" }, m.content ?? ""))));
  const box = $("#message-list");
  box.scrollTop = box.scrollHeight;
}

async function post() {
  const content = $("#post-content").value;
  if (!content.trim() || !project) {
    $("#post-state").textContent = project ? "Write a message first." : "Pick a project first.";
    return;
  }
  const state = $("#post-state");
  state.textContent = "posting…";
  try {
    const res = await api(`${projectPath(project)}/messages`, {
      method: "POST",
      body: { role: $("#post-role").value, content, thread_id: thread || null },
    });
    $("#post-content").value = "";
    lastAccepted = { ...res, for: nameKey(project) };
    thread = res.thread_id;
    save();
    state.textContent = `posted message ${res.message_id} at position ${res.position}`;
    loadProjects();
    await load({ minPosition: res.position });
  } catch (err) {
    state.textContent = "not posted";
    showError(err, "Post");
  }
}
