// The console's shell: views chosen by the URL hash (#/view?params), the token form.

import { getToken, setToken } from "./api.js";
import { $, clearError } from "./ui.js";
import { lastProject, onParamsSaved, route } from "./state.js";
import * as projects from "./projects.js";
import * as conversations from "./conversations.js";
import * as events from "./events.js";
import * as workflows from "./workflows.js";
import * as jobs from "./jobs.js";
import * as health from "./health.js";

const VIEWS = { projects, events, workflows, jobs, conversations, health };
const PROJECT_VIEWS = new Set(["conversations", "workflows", "jobs"]);
let current = null;

function updateNav() {
  const project = lastProject();
  for (const a of document.querySelectorAll("nav a[data-view]")) {
    const v = a.dataset.view;
    a.href = project && PROJECT_VIEWS.has(v) ? `#/${v}?project=${encodeURIComponent(project)}` : `#/${v}`;
    if (v === current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function render() {
  const { view, params } = route(Object.keys(VIEWS));
  if (!params.project && lastProject() && PROJECT_VIEWS.has(view)) params.project = lastProject();
  if (current && current !== view) {
    VIEWS[current].hide?.();
    $(`#view-${current}`).hidden = true;
  }
  current = view;
  $(`#view-${view}`).hidden = false;
  document.title = `chatlog · ${view}`;
  updateNav();
  VIEWS[view].show(params);
}

function setupToken() {
  const input = $("#token-input");
  const state = $("#token-state");
  const describe = () => { state.textContent = getToken() ? "set" : "none"; };
  input.value = getToken();
  describe();
  $("#token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    setToken(input.value.trim());
    describe();
    clearError();
    $(".token-box").open = false;
    render();
  });
  $("#token-forget").addEventListener("click", () => {
    setToken("");
    input.value = "";
    describe();
    render();
  });
}

function headerHeight() {
  document.documentElement.style.setProperty("--header-h", `${$(".top").offsetHeight}px`);
}

window.addEventListener("hashchange", render);
window.addEventListener("resize", headerHeight);
headerHeight();
onParamsSaved(updateNav);
setupToken();
for (const v of Object.values(VIEWS)) v.init?.();
render();
document.documentElement.dataset.ready = "true";
