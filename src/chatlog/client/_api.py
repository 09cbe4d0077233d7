"""Each endpoint of the HTTP API as a :class:`Call` (shared by ``Client`` and ``AsyncClient``)."""

from __future__ import annotations

import math
import time
from typing import Any
from urllib.parse import quote

import httpx

from chatlog.client._calls import Call, Retry, model, new_id, parsed
from chatlog.http.jobs import JobsPage
from chatlog.http.models import EventsPage, MessageAccepted, ProjectsPage
from chatlog.orchestrator.job_records import JobView
from chatlog.orchestrator.views import WorkflowView
from chatlog.projections.models import MessagePage, ThreadPage, WorkflowsPage

#: The server's longest long-poll (seconds); longer waits are several polls.
MAX_POLL = 300.0


def _p(segment: str) -> str:
    return quote(segment, safe="")


def project_path(project: str, *rest: str) -> str:
    return "/v1/projects/" + "/".join(_p(s) for s in (project, *rest))


def append(
    project: str, content: str, *, role: str, thread_id: str | None,
    metadata: dict[str, Any] | None, expected_version: int | None, event_id: str | None,
) -> Call[MessageAccepted]:
    eid = event_id or new_id()
    body: dict[str, Any] = {"role": role, "content": content, "event_id": eid,
                            "thread_id": thread_id}
    if metadata is not None:
        body["metadata"] = metadata
    if expected_version is not None:
        body["expected_version"] = expected_version
    return Call("POST", project_path(project, "messages"), model(MessageAccepted), json=body,
                retry=Retry.IDEMPOTENT, key=eid)


def projects() -> Call[ProjectsPage]:
    return Call("GET", "/v1/projects", model(ProjectsPage))


def threads(
    project: str, *, limit: int | None, cursor: str | None, min_position: str | None
) -> Call[ThreadPage]:
    return Call("GET", project_path(project, "threads"), model(ThreadPage),
                params={"limit": limit, "cursor": cursor, "min_position": min_position})


def messages(
    project: str, thread_id: str, *, after_version: int | None, limit: int | None,
    min_position: str | None,
) -> Call[MessagePage]:
    return Call("GET", project_path(project, "threads", thread_id, "messages"),
                model(MessagePage),
                params={"after_version": after_version, "limit": limit,
                        "min_position": min_position})


def events(
    *, after: str | None, project: str | None, thread_id: str | None, workflow_id: str | None,
    types: list[str] | None, limit: int | None,
) -> Call[EventsPage]:
    return Call("GET", "/v1/events", model(EventsPage), params={
        "after": after, "project": project, "thread_id": thread_id,
        "workflow_id": workflow_id, "types": types, "limit": limit})


def stream_params(
    *, project: str | None, thread_id: str | None, workflow_id: str | None,
    types: list[str] | None,
) -> dict[str, Any]:
    params = {"project": project, "thread_id": thread_id, "workflow_id": workflow_id,
              "types": types}
    return {k: ",".join(v) if isinstance(v, list) else v
            for k, v in params.items() if v is not None}


# -- workflows ---------------------------------------------------------------------


def create_workflow(
    project: str, *, name: str, input: dict[str, Any] | None, workflow_id: str | None
) -> Call[WorkflowView]:
    body: dict[str, Any] = {"name": name, "input": input or {}}
    if workflow_id is not None:
        body["workflow_id"] = workflow_id
    return Call("POST", project_path(project, "workflows"), model(WorkflowView), json=body,
                retry=Retry.ONCE)


def command(project: str, workflow_id: str, path: str, body: dict[str, Any]) -> Call[WorkflowView]:
    return Call("POST", project_path(project, "workflows", workflow_id, path),
                model(WorkflowView), json=body, retry=Retry.ONCE)


def get_workflow(project: str, workflow_id: str) -> Call[WorkflowView]:
    return Call("GET", project_path(project, "workflows", workflow_id), model(WorkflowView))


def _view_or_none(resp: httpx.Response) -> WorkflowView | None:
    if resp.status_code == 408:
        return None
    return parsed(WorkflowView, resp.content)


def wait_deadline(timeout: float) -> float:
    """The monotonic time a ``wait_for`` of ``timeout`` seconds ends; ValueError unless it
    is a finite number >= 0 (NaN never ends a wait: it polled without pause forever)."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) \
            or not math.isfinite(timeout) or timeout < 0:
        raise ValueError(f"timeout must be a finite number of seconds >= 0, not {timeout!r}")
    return time.monotonic() + timeout


def poll_workflow(
    project: str, workflow_id: str, states: frozenset[str], timeout: float
) -> Call[WorkflowView | None]:
    """One long-poll: the workflow once in one of ``states`` (or ended); None at 408."""
    return Call("GET", project_path(project, "workflows", workflow_id), _view_or_none,
                params={"wait_for": sorted(states), "timeout": round(timeout, 3)},
                accept=frozenset({408}), timeout=timeout + 10.0)


def list_workflows(
    project: str, *, state: str | None, limit: int | None, cursor: str | None,
    min_position: str | None,
) -> Call[WorkflowsPage]:
    return Call("GET", project_path(project, "workflows"), model(WorkflowsPage),
                params={"state": state, "limit": limit, "cursor": cursor,
                        "min_position": min_position})


# -- jobs ----------------------------------------------------------------------------


def enqueue_job(
    project: str, kind: str, *, payload: dict[str, Any] | None, workflow_id: str | None,
    job_id: str | None, max_deliveries: int | None,
) -> Call[JobView]:
    jid = job_id or f"job-{new_id()}"
    body: dict[str, Any] = {"kind": kind, "payload": payload or {}, "job_id": jid}
    if workflow_id is not None:
        body["workflow_id"] = workflow_id
    if max_deliveries is not None:
        body["max_deliveries"] = max_deliveries
    return Call("POST", project_path(project, "jobs"), model(JobView), json=body,
                retry=Retry.IDEMPOTENT, key=jid)


def get_job(project: str, job_id: str) -> Call[JobView]:
    return Call("GET", project_path(project, "jobs", job_id), model(JobView))


def list_jobs(
    project: str, *, state: str | None, limit: int | None, cursor: str | None
) -> Call[JobsPage]:
    return Call("GET", project_path(project, "jobs"), model(JobsPage),
                params={"state": state, "limit": limit, "cursor": cursor})
