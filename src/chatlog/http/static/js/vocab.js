// The server's vocabulary (GET /v1/vocabulary): event types and workflow states.
// The console keeps no copies of its own.

import { api } from "./api.js";

let loading = null;

/** {event_types, workflow_states, terminal_states}; fetched once. */
export function vocabulary() {
  if (!loading) {
    loading = api("/v1/vocabulary").catch((err) => {
      loading = null;
      throw err;
    });
  }
  return loading;
}
