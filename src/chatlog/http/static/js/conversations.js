// Conversations: project picker, conversation list (newest first), thread view, post a message.

import { api, ApiError, items, nextCursor, projectPath, query } from "./api.js";
import { jsonView } from "./json.js";
import { projects } from "./projects.js";
import { saveParams } from "./state.js";
import { $, el, fmtTime, showError, clearError } from "./ui.js";

const PAGE = 50;
const MSG_PAGE = 100;   // a long thread shows its last 100 messages; earlier ones on demand

let project = "";
let thread = "";
let threadsCursor = null;
let loadSeq = 0;
let threadsSignature = "";
let threadsFailed = false;  // the last conversation list request was refused or failed
let shownThread = "";     // the thread whose messages are on screen
let shownVersion = 0;     // the last version on screen
let firstVersion = 0;     // the first version on screen (earlier ones load on demand)
let threadLast = {};      // thread id -> its last version, from the conversation list
let visible = false;
let polling = false;
let pollTimer = null;
const POLL_MS = 2000;
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
    shownThread = "";
    markCurrent();
    $("#post-content").focus();
  });
  $("#more-threads").addEventListener("click", () => loadThreads({ append: true }));
  $("#earlier-messages").addEventListener("click", loadEarlier);
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
  visible = true;
  clearTimeout(pollTimer);
  pollTimer = setTimeout(poll, POLL_MS);
}

export function hide() {
  visible = false;
  clearTimeout(pollTimer);
}

async function loadProjects() {
  try {
    knownProjects = await projects({ fresh: true });
    projectInfo();
  } catch (err) {
    if (err instanceof ApiError && err.refused) showError(err, "Projects");
  }
}

async function load({ minPosition } = {}) {
  renderThreadHeader();
  $("#conv-columns").hidden = !project;
  if (!project) {
    $("#project-info").replaceChildren("Pick a project to see its conversations, or choose one on the ",
      el("a", { href: "#/projects" }, "Projects"), " page.");
    $("#thread-list").replaceChildren();
    $("#more-threads").hidden = true;
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
  if (!project || threadsFailed) return;
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

async function loadThreads({ append = false, minPosition, quiet = false } = {}) {
  const seq = ++loadSeq;
  try {
    const data = await api(`${projectPath(project)}/threads${query({
      limit: PAGE, cursor: append ? threadsCursor : undefined, min_position: minPosition,
    })}`);
    if (seq !== loadSeq) return;
    if (!quiet) clearError();
    threadsFailed = false;
    projectInfo(data);
    const threads = items(data, "threads");
    const signature = JSON.stringify(threads);
    if (!append && quiet && signature === threadsSignature) return; // nothing changed
    if (!append) threadsSignature = signature;
    threadsCursor = nextCursor(data);
    const rows = threads.map(threadItem);
    const list = $("#thread-list");
    // Keep keyboard focus on the same thread when the list is redrawn.
    const focused = list.contains(document.activeElement) ? document.activeElement.dataset.threadId : null;
    if (append) list.append(...rows);
    else list.replaceChildren(...rows);
    $("#more-threads").hidden = !threadsCursor;
    if (!rows.length && !append) {
      list.append(el("li", { class: "muted" }, "No conversations yet: post the first message."));
    }
    markCurrent();
    if (focused) list.querySelector(`button[data-thread-id="${CSS.escape(focused)}"]`)?.focus();
  } catch (err) {
    if (seq !== loadSeq || quiet) return;
    threadsFailed = true;
    $("#thread-list").replaceChildren();
    threadsSignature = "";
    $("#project-info").textContent = "";
    showError(err, `Conversations of ${project}`);
  }
}

function threadItem(t) {
  const id = t.thread_id ?? t.id;
  threadLast[id] = t.last_version ?? t.message_count ?? 0;
  const count = t.message_count ?? t.count ?? t.messages ?? 0;
  const preview = t.last_preview ?? t.last_message_preview ?? t.preview ?? "";
  const role = t.last_role ? `${t.last_role}: ` : "";
  const updated = t.updated_at ?? t.last_message_at ?? t.updated;
  const button = el("button", {
    type: "button", dataset: { threadId: id },
    onclick: () => { thread = id; save(); markCurrent(); $("#post-state").textContent = ""; loadMessages(); },
  },
  el("span", { class: "title mono" }, t.title ?? id),
  el("span", { class: "preview" }, role + preview),
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
  const link = $("#thread-events");
  link.hidden = !thread;
  link.href = `#/events?${new URLSearchParams({ project, thread_id: thread })}`;
  $("#post-legend").textContent = thread ? "Post a message to this thread" : "Start a new thread";
}

function messageItem(m) {
  const role = String(m.role ?? "?");
  const meta = m.metadata && typeof m.metadata === "object" ? m.metadata : {};
  // Imported history keeps its original time in the metadata.
  const original = typeof meta.created_at === "string" ? meta.created_at : null;
  const when = original ?? m.created_at ?? m.time;
  const roleClass = ["user", "assistant", "system", "tool"].includes(role) ? role : "other";
  return el("li", {
    class: `message role-${roleClass}`, dataset: { version: m.version ?? "", messageId: m.message_id ?? m.id ?? "", role },
  },
  el("div", { class: "meta" },
    el("span", { class: "role" }, role),
    el("span", {}, `#${m.version ?? "?"} · `),
    el("time", { datetime: when, title: original ? `imported; appended ${fmtTime(m.created_at)}` : undefined },
      fmtTime(when)),
    original ? el("span", { class: "muted" }, " (original time)") : ""),
  el("div", { class: "content" }, m.content ?? ""),
  Object.keys(meta).length ? el("details", { class: "metadata" },
    el("summary", {}, "Metadata"), jsonView(meta, `Metadata of message ${m.version ?? ""}`)) : "");
}

/** The page of messages before the first one shown. */
async function loadEarlier() {
  const want = thread;
  if (!want || firstVersion <= 1) return;
  const from = Math.max(0, firstVersion - 1 - MSG_PAGE);
  try {
    const data = await api(`${projectPath(project)}/threads/${encodeURIComponent(want)}/messages${query({
      after_version: from || undefined, limit: firstVersion - 1 - from,
    })}`);
    if (want !== thread) return;
    const got = items(data, "messages");
    const box = $("#message-list");
    const height = box.scrollHeight;
    box.prepend(...got.map(messageItem));
    box.scrollTop += box.scrollHeight - height;  // keep the reader's place
    firstVersion = from + 1;
    $("#earlier-messages").hidden = firstVersion <= 1;
  } catch (err) {
    showError(err, `Thread ${want}`);
  }
}

/** Load the current thread; ``more`` only fetches what came after the shown messages. */
async function loadMessages({ minPosition, more = false } = {}) {
  renderThreadHeader();
  const want = thread;
  const box = $("#message-list");
  if (more && shownThread !== want) return;
  // A long thread opens at its last page; "Load earlier messages" pages back.
  const last = threadLast[want] ?? 0;
  const start = more ? shownVersion : Math.max(0, last - MSG_PAGE);
  let after = start;
  const list = [];
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
    if (want === thread && !more) {
      box.replaceChildren();
      shownThread = "";
      showError(err, `Thread ${want}`);
    }
    return;
  }
  if (want !== thread) return;
  if (more && (shownThread !== want || !list.length)) return;
  const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 8;
  if (more) box.append(...list.map(messageItem));
  else box.replaceChildren(...list.map(messageItem));
  shownThread = want;
  shownVersion = Math.max(more ? shownVersion : 0, ...list.map((m) => m.version ?? 0));
  if (!more) {
    firstVersion = list.length ? Math.min(...list.map((m) => m.version ?? 1)) : 1;
    $("#earlier-messages").hidden = firstVersion <= 1;
  }
  if (!more || atBottom) box.scrollTop = box.scrollHeight;
}

/** While shown, pick up what others appended (the list and the open thread). */
async function poll() {
  clearTimeout(pollTimer);
  if (!visible) return;
  if (project && !polling) {
    polling = true;
    try {
      await loadThreads({ quiet: true });
      if (thread) await loadMessages({ more: true });
    } finally {
      polling = false;
    }
  }
  if (visible) pollTimer = setTimeout(poll, POLL_MS);
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
