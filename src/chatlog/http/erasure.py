"""Erasure over HTTP: forget a project or a thread in every tier, and follow it.

``DELETE`` records the erasure durably, then runs it; it answers 200 with the
report once the physical erasure is complete, or 202 with its progress when it
takes longer than ``wait`` seconds (it goes on in the background, and resumes
after a restart). ``GET …/erasures/{erasure_id}`` shows where it stands.
Admin tokens, or tokens with the project in their ``erase`` list, may erase.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field

from chatlog.erasure import Eraser, ErasureReport
from chatlog.errors import InvalidInput, NotFound
from chatlog.http._routing import Endpoint, json_response, read_query
from chatlog.http._state import AppState, ServiceUnavailable, state
from chatlog.http.models import Out, Query
from chatlog.identity import ProjectKey, is_new_thread, normalize_thread_id

PROJECT = "/v1/projects/{project}"
THREAD = PROJECT + "/threads/{thread_id}"
STATUS = PROJECT + "/erasures/{erasure_id}"

log = logging.getLogger(__name__)


class EraseQuery(Query):
    wait: float = Field(default=30.0, ge=0, le=600,
                        description="Seconds to wait for the physical erasure before 202")


class SnapshotView(Out):
    """One server's RDB snapshot file after the erasure."""

    node: str
    file: str = Field(description="The node's dump file (its `dir`/`dbfilename`)")
    removed: bool = Field(description="Removed by the erasure (it was under the data dir)")
    may_hold: bool = Field(description="Whether an RDB file of this node may still hold "
                           "erased content")
    why: str


class ErasureView(Out):
    """An erasure's report: what it erased where, and whether it is complete."""

    erasure_id: str
    project: str
    project_name: str
    scope: str = Field(description="`project`, `thread` or `aggregates` (an integration's)")
    thread_id: str | None = None
    aggregates: str | None = Field(default=None, description="With scope `aggregates`: "
                                   "the aggregate key prefix after `<project>/`")
    requested_by: str
    requested_at: float = Field(description="Unix time")
    state: str = Field(description="`running`, `done` or `failed` (it is retried on restart)")
    step: str = Field(description="The last step completed")
    progress: str = Field(description="Steps completed / steps")
    tombstone_position: str | None = None
    events_erased: dict[str, int] = Field(description="Per tier: `redis`, `archive`")
    read_model_rows: int
    bytes_rewritten: int = Field(description="Archive segment bytes written anew")
    aof_rewrites: int = Field(description="Append-only files rewritten (one per node)")
    snapshots: list[SnapshotView] = Field(
        default_factory=list, description="Per node, once the `aof` step is done: whether "
        "an RDB snapshot may still hold erased content (docs/erasure.md)")
    finished_at: float | None = Field(default=None, description="When every tier was done")
    error: str | None = None


def _view(report: ErasureReport) -> ErasureView:
    return ErasureView.model_validate(report.as_dict())


def _eraser(st: AppState) -> Eraser:
    if st.services.eraser is None:
        raise ServiceUnavailable("erasure is not available in this process")
    return st.services.eraser


def _authorized(request: web.Request) -> tuple[AppState, ProjectKey]:
    st = state(request)
    principal = st.tokens.authenticate(request)
    project = st.project_of(request)
    principal.require_erase(project)
    return st, project


def _finished(st: AppState) -> Callable[[asyncio.Task[Any]], None]:
    def done(task: asyncio.Task[Any]) -> None:
        st.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("erasure failed (resumed when serve restarts): %s", task.exception())

    return done


async def _erase(request: web.Request, thread_id: str | None) -> web.Response:
    st, project = _authorized(request)
    q = read_query(request, EraseQuery)
    eraser = _eraser(st)
    if thread_id is not None:
        if is_new_thread(thread_id):
            raise InvalidInput(f"thread_id {thread_id!r} names no thread; give the thread's id")
        thread_id, _ = normalize_thread_id(thread_id)
    await eraser.require_scope(project.key, project.display, thread_id)
    who = st.tokens.authenticate(request).name
    report = await eraser.request(project.key, project.display, thread_id, requested_by=who)
    await eraser.tombstone(report.erasure_id)  # before any answer: it cuts the log
    task = asyncio.get_running_loop().create_task(eraser.run(report.erasure_id))
    st.background.add(task)
    task.add_done_callback(_finished(st))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(task), q.wait)
    current = await eraser.status(report.erasure_id)
    assert current is not None
    headers = {"Location": STATUS.format(project=project.key, erasure_id=report.erasure_id)}
    resp = json_response(_view(current), 200 if current.state == "done" else 202)
    resp.headers.update(headers)
    return resp


async def erase_project(request: web.Request) -> web.Response:
    """Erase a project's events, rows and files; a tombstone stays in the log."""
    return await _erase(request, None)


async def erase_thread(request: web.Request) -> web.Response:
    """Erase one thread's events, rows and files; a tombstone stays in the log."""
    return await _erase(request, request.match_info["thread_id"])


async def get_erasure(request: web.Request) -> web.Response:
    """Where an erasure stands."""
    st, project = _authorized(request)
    erasure_id = request.match_info["erasure_id"]
    report = await _eraser(st).status(erasure_id)
    if report is None or report.project != str(project.key):
        raise NotFound(f"erasure {erasure_id} does not exist in project {project.display!r}")
    return json_response(_view(report))


_ERASED: dict[int, tuple[type[BaseModel] | None, str]] = {
    200: (ErasureView, "Erased from every tier"),
    202: (ErasureView, "Recorded and running (see Location)"),
}
_AFTER = ("Afterwards its threads answer 404 (an erased project lists none), replay and "
          "SSE skip the erased events (cursors into them still work), and an append to it "
          "starts a fresh history. A content-free `erasure.recorded` event stays in the log.")

ENDPOINTS = [
    Endpoint("DELETE", PROJECT, erase_project, "Erase a project from every tier", "erasure",
             query=EraseQuery, responses=_ERASED, description=_AFTER),
    Endpoint("DELETE", THREAD, erase_thread, "Erase a thread from every tier", "erasure",
             query=EraseQuery, responses=_ERASED, description=_AFTER),
    Endpoint("GET", STATUS, get_erasure, "An erasure's report and progress", "erasure",
             responses={200: (ErasureView, "The report")}, errors=(404,)),
]
