"""Workflows: list, create, start, ask for and decide approval, end; read and long-poll.

Each command is one event appended by the orchestrator at the workflow's
current version; a command that does not apply in the current state is a 409
naming that state. Reading one workflow folds its events from the log, so it
is always current; the list comes from the workflows read model (with
``min_position`` for read-your-writes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, Field

from chatlog import offload
from chatlog.errors import InvalidInput, WaitTimeout
from chatlog.events import WORKFLOW_STATES
from chatlog.http._big_json import json_answer, read_big
from chatlog.http._routing import (
    Endpoint,
    Handler,
    json_response,
    read_query,
    read_raw_body,
    validate_body,
)
from chatlog.http._state import state
from chatlog.http.models import POSITION_PATTERN, Body, JsonObject, Query
from chatlog.http.queries import wait_for_position
from chatlog.identity import ProjectKey
from chatlog.orchestrator import Orchestrator, WorkflowView
from chatlog.projections.models import WorkflowsPage

# -- request bodies and queries -------------------------------------------------------------------


class CreateWorkflow(Body):
    name: str = Field(default="", max_length=200)
    input: JsonObject = Field(default_factory=dict)
    workflow_id: str | None = Field(
        default=None, min_length=1, max_length=200,
        description="Your id for it; default wf-<uuid4>. Creating it again is a 409",
    )
    run_timeout: float | None = Field(
        default=None, gt=0, le=31_536_000,
        description="Seconds it may run (from start, and from each approval decision) "
                    "before it times out; default CHATLOG_RUN_TIMEOUT (unset: no limit)",
    )


class StartWorkflow(Body):
    input: JsonObject = Field(default_factory=dict)


class RequestApproval(Body):
    prompt: str = Field(default="", max_length=10_000)


class DecideApproval(Body):
    approved: bool
    comment: str = Field(default="", max_length=10_000)


class CompleteWorkflow(Body):
    result: JsonObject = Field(default_factory=dict)


class FailWorkflow(Body):
    reason: str = Field(min_length=1, max_length=10_000)


class CancelWorkflow(Body):
    reason: str = Field(default="", max_length=10_000)


class WorkflowQuery(Query):
    wait_for: str | None = Field(
        default=None, max_length=500, description="Comma-separated states to long-poll for"
    )
    timeout: float = Field(default=30.0, ge=0, le=300, description="Seconds to long-poll")
    min_position: str | None = Field(
        default=None, pattern=POSITION_PATTERN,
        description="Accepted for symmetry: workflow reads are always current",
    )


class WorkflowsQuery(Query):
    state: str | None = Field(default=None, max_length=40, description="Only this state")
    name: str | None = Field(
        default=None, max_length=200, description="Only workflows whose name contains this")
    workflow_id: str | None = Field(
        default=None, max_length=200, description="Only workflows whose id starts with this")
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = Field(default=None, max_length=500, description="The next_cursor")
    min_position: str | None = Field(default=None, pattern=POSITION_PATTERN)


BASE = "/v1/projects/{project}/workflows"
ITEM = BASE + "/{workflow_id}"

B = TypeVar("B", bound=BaseModel)
#: A command: the orchestrator call a request body turns into.
Command = Callable[[Orchestrator, ProjectKey, str, B], Awaitable[WorkflowView]]


async def create_workflow(request: web.Request) -> web.Response:
    """Create a workflow; it waits for start until now + the start timeout."""
    st = state(request)
    project = st.authorized_project(request, write=True)
    body = await _read_command(request, CreateWorkflow)
    orchestrator = st.orchestrator()
    view = await orchestrator.create_workflow(
        project, name=body.name, input=body.input, workflow_id=body.workflow_id,
        run_timeout=body.run_timeout,
    )
    return json_answer(view, 201)


#: The fields of a command's body that may hold a big JSON object.
_BIG_FIELDS: dict[type[BaseModel], tuple[str, ...]] = {
    CreateWorkflow: ("input",), StartWorkflow: ("input",), CompleteWorkflow: ("result",),
}


async def _read_command(request: web.Request, model: type[B]) -> B:
    """A command's body; a big one parsed and checked in the worker process, its big
    field an ``orjson.Fragment`` (issue 15 #9)."""
    raw = await read_raw_body(request)
    if len(raw) < offload.BIG:
        return validate_body(raw, model)
    body, _ = await read_big(model, raw, _BIG_FIELDS.get(model, ()))
    return body


def _command(name: str, body_model: type[B], run: Command[B]) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        st = state(request)
        project = st.authorized_project(request, write=True)
        body = await _read_command(request, body_model)
        orchestrator = st.orchestrator()
        view = await run(orchestrator, project, request.match_info["workflow_id"], body)
        return json_answer(view)

    handler.__name__ = handler.__qualname__ = name
    return handler


async def get_workflow(request: web.Request) -> web.Response:
    """State, deadline and history; ``wait_for=STATE[,STATE]`` long-polls up to ``timeout``."""
    st = state(request)
    project = st.authorized_project(request)
    q = read_query(request, WorkflowQuery)
    orchestrator = st.orchestrator()
    workflow_id = request.match_info["workflow_id"]
    view = await orchestrator.get_workflow(project, workflow_id)  # 404 first
    if not q.wait_for:
        return json_answer(view)
    states = {s.strip() for s in q.wait_for.split(",") if s.strip()}
    if view.state not in states:
        poll = _LongPoll()
        st.streams.add(poll)  # ended at shutdown, as the SSE streams are
        try:
            view = await orchestrator.wait_for_state(project, workflow_id, states, q.timeout)
        except WaitTimeout:
            # "Not yet" is an answer, not an error: proxies and clients retry a 408 by
            # themselves. The caller sees the current state and polls again.
            view = await orchestrator.get_workflow(project, workflow_id)
        except asyncio.CancelledError:
            if not poll.ended or poll.task is None:
                raise
            poll.task.uncancel()  # the server is stopping: "not yet", as at the timeout
            view = await orchestrator.get_workflow(project, workflow_id)
        finally:
            st.streams.discard(poll)
    # Not validated again: its big values (Fragments) stay as they are.
    return json_answer(PolledWorkflow.model_construct(**dict(view), reached=view.state in states))


class _LongPoll:
    """A long-poll waiting. Asked to stop (the server is shutting down), it is answered
    as at its timeout; else aiohttp's shutdown waited for it twice its timeout (10 s),
    then cut the connection."""

    __slots__ = ("ended", "task")

    def __init__(self) -> None:
        self.task = asyncio.current_task()
        self.ended = False

    def stop(self) -> None:
        self.ended = True
        if self.task is not None:
            self.task.cancel()


class PolledWorkflow(WorkflowView):
    """A workflow as a long-poll (``wait_for``) answers it."""

    reached: bool | None = Field(
        default=None,
        description="With `wait_for`: true when the workflow is in one of the states asked "
                    "for, false when the time was up (or it ended in another state) first",
    )


async def list_workflows(request: web.Request) -> web.Response:
    """A project's workflows, most recently changed first (``state`` filters)."""
    st = state(request)
    project = st.authorized_project(request)
    q = read_query(request, WorkflowsQuery)
    if q.state is not None and q.state not in WORKFLOW_STATES:
        raise InvalidInput(
            f"unknown workflow state {q.state!r}; states are {', '.join(WORKFLOW_STATES)}"
        )
    read_model = st.read_model()
    await wait_for_position(st, project, q.min_position)
    page = await asyncio.to_thread(
        read_model.list_workflows, project, state=q.state, limit=q.limit, cursor=q.cursor,
        name=q.name, id_prefix=q.workflow_id,
    )
    return json_response(page)


def _ep(path: str, name: str, body: type[B], run: Command[B], summary: str) -> Endpoint:
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
    _ep("/start", "start_workflow", StartWorkflow,
        lambda o, p, wid, b: o.start_workflow(p, wid, input=b.input), "The start_task event"),
    _ep("/approval-requests", "request_approval", RequestApproval,
        lambda o, p, wid, b: o.request_approval(p, wid, prompt=b.prompt),
        "Ask for approval (waits until now + the approval timeout)"),
    _ep("/approval", "decide_approval", DecideApproval,
        lambda o, p, wid, b: o.decide_approval(p, wid, approved=b.approved, comment=b.comment),
        "Approve or reject"),
    _ep("/complete", "complete_workflow", CompleteWorkflow,
        lambda o, p, wid, b: o.complete(p, wid, result=b.result), "Complete it"),
    _ep("/fail", "fail_workflow", FailWorkflow,
        lambda o, p, wid, b: o.fail(p, wid, reason=b.reason), "Fail it"),
    _ep("/cancel", "cancel_workflow", CancelWorkflow,
        lambda o, p, wid, b: o.cancel(p, wid, reason=b.reason), "Cancel it"),
]
