"""Workflows: list, create, start, ask for and decide approval, end; read and long-poll.

Each command is one event appended by the orchestrator at the workflow's
current version; a command that does not apply in the current state is a 409
naming that state. Reading one workflow folds its events from the log, so it
is always current; the list comes from the workflows read model (with
``min_position`` for read-your-writes).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, Field

from chatlog.errors import InvalidInput, WaitTimeout
from chatlog.http._routing import Endpoint, json_response, read_body, read_query
from chatlog.http._state import state
from chatlog.http.models import (
    CancelWorkflow,
    CompleteWorkflow,
    CreateWorkflow,
    DecideApproval,
    FailWorkflow,
    RequestApproval,
    StartWorkflow,
    WorkflowQuery,
    WorkflowsPage,
    WorkflowsQuery,
    WorkflowSummary,
)
from chatlog.http.queries import wait_for_position
from chatlog.identity import ProjectKey
from chatlog.orchestrator.views import WorkflowView
from chatlog.projections.workflows import STATE_AFTER
from chatlog.projections.workflows import list_workflows as read_workflows

STATES = frozenset(STATE_AFTER.values())
BASE = "/v1/projects/{project}/workflows"
ITEM = BASE + "/{workflow_id}"


async def create_workflow(request: web.Request) -> web.Response:
    """Create a workflow; it waits for start until now + the start timeout."""
    st = state(request)
    project = st.authorized_project(request, write=True)
    body = await read_body(request, CreateWorkflow)
    orchestrator = st.orchestrator()
    view = await orchestrator.create_workflow(
        project, name=body.name, input=body.input, workflow_id=body.workflow_id,
        run_timeout=body.run_timeout,
    )
    return json_response(view, 201)


Command = Callable[[Any, ProjectKey, str, Any], Awaitable[WorkflowView]]


def _command(name: str, body_model: type[BaseModel], run: Command) -> Any:
    async def handler(request: web.Request) -> web.Response:
        st = state(request)
        project = st.authorized_project(request, write=True)
        body = await read_body(request, body_model)
        orchestrator = st.orchestrator()
        view = await run(orchestrator, project, request.match_info["workflow_id"], body)
        return json_response(view)

    handler.__name__ = handler.__qualname__ = name
    return handler


async def _start(o: Any, p: ProjectKey, wid: str, b: StartWorkflow) -> WorkflowView:
    view: WorkflowView = await o.start_workflow(p, wid, input=b.input)
    return view


async def _ask(o: Any, p: ProjectKey, wid: str, b: RequestApproval) -> WorkflowView:
    view: WorkflowView = await o.request_approval(p, wid, prompt=b.prompt)
    return view


async def _decide(o: Any, p: ProjectKey, wid: str, b: DecideApproval) -> WorkflowView:
    view: WorkflowView = await o.decide_approval(p, wid, approved=b.approved, comment=b.comment)
    return view


async def _complete(o: Any, p: ProjectKey, wid: str, b: CompleteWorkflow) -> WorkflowView:
    view: WorkflowView = await o.complete(p, wid, result=b.result)
    return view


async def _fail(o: Any, p: ProjectKey, wid: str, b: FailWorkflow) -> WorkflowView:
    view: WorkflowView = await o.fail(p, wid, reason=b.reason)
    return view


async def _cancel(o: Any, p: ProjectKey, wid: str, b: CancelWorkflow) -> WorkflowView:
    view: WorkflowView = await o.cancel(p, wid, reason=b.reason)
    return view


async def get_workflow(request: web.Request) -> web.Response:
    """State, deadline and history; ``wait_for=STATE[,STATE]`` long-polls up to ``timeout``."""
    st = state(request)
    project = st.authorized_project(request)
    q = read_query(request, WorkflowQuery)
    orchestrator = st.orchestrator()
    workflow_id = request.match_info["workflow_id"]
    view: WorkflowView = await orchestrator.get_workflow(project, workflow_id)  # 404 first
    if not q.wait_for:
        return json_response(view)
    states = {s.strip() for s in q.wait_for.split(",") if s.strip()}
    if view.state not in states:
        try:
            view = await orchestrator.wait_for_state(project, workflow_id, states, q.timeout)
        except WaitTimeout:
            # "Not yet" is an answer, not an error: proxies and clients retry a 408 by
            # themselves. The caller sees the current state and polls again.
            view = await orchestrator.get_workflow(project, workflow_id)
    return json_response(PolledWorkflow(**view.model_dump(), reached=view.state in states))


class PolledWorkflow(WorkflowView):
    """A workflow as a long-poll (``wait_for``) answers it."""

    reached: bool | None = Field(
        default=None,
        description="With `wait_for`: true when the workflow is in one of the states asked "
                    "for, false when the time was up (or it ended in another state) first",
    )


def _encode_cursor(key: tuple[int, int, str]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(key))).decode().rstrip("=")


def _decode_cursor(text: str) -> tuple[int, int, str]:
    try:
        ms, seq, wid = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if not (isinstance(ms, int) and isinstance(seq, int) and isinstance(wid, str)):
            raise ValueError(text)
        return ms, seq, wid
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise InvalidInput(
            f"cursor {text!r} is not one this API gave out; pass next_cursor unchanged"
        ) from None


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


async def list_workflows(request: web.Request) -> web.Response:
    """A project's workflows, most recently changed first (``state`` filters)."""
    st = state(request)
    project = st.authorized_project(request)
    q = read_query(request, WorkflowsQuery)
    if q.state is not None and q.state not in STATES:
        raise InvalidInput(
            f"unknown workflow state {q.state!r}; states are {', '.join(sorted(STATES))}"
        )
    before = _decode_cursor(q.cursor) if q.cursor else None
    read_model = st.read_model()
    await wait_for_position(st, project, q.min_position)

    def query() -> list[Any]:
        # The read model's own per-thread read connection (one snapshot per query).
        conn = read_model._conn()
        try:
            rows: list[Any] = read_workflows(
                conn, project.key, state=q.state, limit=q.limit + 1, before=before
            )
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            rows = []  # the projector has not created its tables yet: nothing to list
        return rows

    rows = await asyncio.to_thread(query)
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    page = WorkflowsPage(
        workflows=[
            WorkflowSummary(
                workflow_id=r.id, project=uuid.UUID(r.project), project_name=r.project_name,
                name=r.name, state=r.state, awaiting=r.awaiting,
                deadline=_time(r.deadline_ms) if r.deadline_ms is not None else None,
                reason=r.reason, version=r.version, position=r.position,
                created_at=_time(r.created_ms), updated_at=_time(r.updated_ms), jobs=r.jobs,
                timed_out=bool(r.timed_out),
            )
            for r in rows
        ],
        next_cursor=_encode_cursor(rows[-1].page_key) if more and rows else None,
    )
    return json_response(page)


def _ep(path: str, name: str, body: type[BaseModel], run: Any, summary: str) -> Endpoint:
    return Endpoint(
        "POST", ITEM + path, _command(name, body, run), summary, "workflows",
        body=body, responses={200: (WorkflowView, "The workflow after the command")},
        errors=(409,),
    )


ENDPOINTS = [
    Endpoint(
        "GET", BASE, list_workflows, "A project's workflows, most recently changed first",
        "workflows", query=WorkflowsQuery,
        responses={200: (WorkflowsPage, "A page of workflows; next_cursor continues")},
    ),
    Endpoint(
        "POST", BASE, create_workflow, "Create a workflow (it waits for start)", "workflows",
        body=CreateWorkflow, responses={201: (WorkflowView, "Created, waiting for start")},
        errors=(409,),
    ),
    Endpoint(
        "GET", ITEM, get_workflow, "A workflow's state, deadline and history", "workflows",
        query=WorkflowQuery,
        responses={200: (PolledWorkflow, "The workflow")},
        description="With `wait_for`, waits up to `timeout` s for one of the states "
                    "(or an end state), then answers 200 with the current state and "
                    "`reached`: false when the time was up first (poll again).",
    ),
    _ep("/start", "start_workflow", StartWorkflow, _start, "The start_task event"),
    _ep("/approval-requests", "request_approval", RequestApproval, _ask,
        "Ask for approval (waits until now + the approval timeout)"),
    _ep("/approval", "decide_approval", DecideApproval, _decide, "Approve or reject"),
    _ep("/complete", "complete_workflow", CompleteWorkflow, _complete, "Complete it"),
    _ep("/fail", "fail_workflow", FailWorkflow, _fail, "Fail it"),
    _ep("/cancel", "cancel_workflow", CancelWorkflow, _cancel, "Cancel it"),
]
