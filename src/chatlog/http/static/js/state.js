// Page state lives in the URL hash (#/view?params), so a refresh shows the same thing.

const listeners = [];

export function onParamsSaved(fn) { listeners.push(fn); }

/** The view name and its parameters from the location hash. */
export function route(known) {
  const raw = location.hash.replace(/^#\/?/, "");
  const i = raw.indexOf("?");
  const name = i < 0 ? raw : raw.slice(0, i);
  const qs = i < 0 ? "" : raw.slice(i + 1);
  return { view: known.includes(name) ? name : known[0], params: Object.fromEntries(new URLSearchParams(qs)) };
}

/** Put a view's parameters in the hash without reloading anything. */
export function saveParams(view, params) {
  const clean = Object.fromEntries(
    Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== ""));
  const qs = new URLSearchParams(clean).toString();
  const hash = `#/${view}${qs ? `?${qs}` : ""}`;
  if (location.hash !== hash) history.replaceState(null, "", hash);
  if (clean.project) sessionStorage.setItem("chatlog.project", clean.project);
  for (const fn of listeners) fn();
}

export function lastProject() {
  return sessionStorage.getItem("chatlog.project") || "";
}
