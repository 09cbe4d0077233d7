"""Read queries: projects, conversation lists and messages.

Each accepts ``min_position`` (the ``position`` an append answered): the query
first waits, up to ``CHATLOG_READ_YOUR_WRITES_TIMEOUT``, until the read model
has applied it: read-your-writes. A position the log has not reached yet is a
400 (it cannot come from an append), so nobody waits for nothing.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from datetime import UTC, datetime

from aiohttp import web

from chatlog.errors import InvalidInput, NotFound
from chatlog.eventstore import parse_position
from chatlog.http._routing import Endpoint, json_response, read_query
from chatlog.http._state import AppState, state
from chatlog.http.models import MessagesQuery, ProjectsPage, ThreadsQuery
from chatlog.identity import ProjectKey
from chatlog.projections.models import MessagePage, ProjectSummary, ThreadPage
from chatlog.projections.queries import ReadModel
from chatlog.projections.workflows import project_activity


async def wait_for_position(st: AppState, project: ProjectKey, position: str | None) -> None:
    """Read-your-writes: wait until the read model has ``position`` of ``project``'s partition."""
    if position is None:
        return
    projector = st.projector()
    partition = st.store.partition_of(project.key)
    if projector.reached(partition, position):
        return
    head = await st.store.head(partition)
    if parse_position(position) > parse_position(head):
        raise InvalidInput(
            f"min_position {position} is after the end of the log (its head is {head}); "
            "pass the position an append answered"
        )
    await projector.wait_for(partition, position, st.settings.read_your_writes_timeout)


async def list_projects(request: web.Request) -> web.Response:
    """The projects the caller's token may read, by name."""
    st = state(request)
    principal = st.tokens.authenticate(request)
    read_model = st.read_model()
    projects = await asyncio.to_thread(_projects_with_workflows, read_model)
    visible = [p for p in projects if principal.can_read(p.project)]
    return json_response(ProjectsPage(projects=visible))


def _ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _projects_with_workflows(read_model: ReadModel) -> list[ProjectSummary]:
    """Projects with messages or workflows: counts of both and the last activity."""
    projects = {str(p.project): p for p in read_model.list_projects()}
    try:
        activity = project_activity(read_model.connection())
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        activity = {}  # the projector has not created its tables yet
    out: list[ProjectSummary] = []
    for key in projects.keys() | activity.keys():
        summary = projects.get(key)
        name, workflows, first_ms, last_ms = activity.get(key, ("", 0, 0, 0))
        if summary is None:
            summary = ProjectSummary(
                project=uuid.UUID(key), name=name, thread_count=0, message_count=0,
                created_at=_ms(first_ms), updated_at=_ms(last_ms),
            )
        last = max(summary.updated_at, _ms(last_ms)) if workflows else summary.updated_at
        out.append(summary.model_copy(
            update={"workflow_count": workflows, "last_activity_at": last}))
    out.sort(key=lambda p: (p.name.casefold(), str(p.project)))
    return out


async def list_threads(request: web.Request) -> web.Response:
    """A project's conversation list, most recently active first."""
    st = state(request)
    project = st.authorized_project(request)
    q = read_query(request, ThreadsQuery)
    read_model = st.read_model()
    await wait_for_position(st, project, q.min_position)
    page = await asyncio.to_thread(read_model.list_threads, project.key, q.limit, q.cursor)
    return json_response(page)


async def list_messages(request: web.Request) -> web.Response:
    """A thread's messages in order; 404 when the project has no such thread."""
    st = state(request)
    project = st.authorized_project(request)
    thread_id = request.match_info["thread_id"]
    q = read_query(request, MessagesQuery)
    read_model = st.read_model()
    await wait_for_position(st, project, q.min_position)

    def query() -> MessagePage | None:
        if not read_model.thread_exists(project.key, thread_id):
            return None
        page: MessagePage = read_model.list_messages(
            project.key, thread_id, q.after_version, q.limit
        )
        return page

    page = await asyncio.to_thread(query)
    if page is None:
        raise NotFound(f"project {project.display!r} has no thread {thread_id!r}")
    return json_response(page)


ENDPOINTS = [
    Endpoint(
        "GET", "/v1/projects", list_projects, "Projects visible to the caller", "queries",
        responses={200: (ProjectsPage, "The projects, by name")},
    ),
    Endpoint(
        "GET", "/v1/projects/{project}/threads", list_threads,
        "A project's conversation list, newest first", "queries",
        query=ThreadsQuery,
        responses={200: (ThreadPage, "A page of threads; next_cursor continues")},
    ),
    Endpoint(
        "GET", "/v1/projects/{project}/threads/{thread_id}/messages", list_messages,
        "A thread's messages in order", "queries",
        query=MessagesQuery,
        responses={200: (MessagePage, "A page of messages; next_after_version continues")},
    ),
]

