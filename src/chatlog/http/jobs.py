"""Jobs over HTTP: enqueue one, list a project's jobs by state (dead letters too), inspect one.

A job belongs to a workflow (its lifecycle events are in the workflow's
history). Enqueued without ``workflow_id``, the job gets a workflow of its
own, created and started for it (named ``job:<kind>``). A ``job_id`` makes
the enqueue idempotent: the same id with the same kind, workflow and payload
answers the job (200); with other content it is a 409.
"""

from __future__ import annotations

import orjson
from aiohttp import web
from pydantic import Field

from chatlog import offload
from chatlog.errors import IntegrityError, NotFound
from chatlog.http._big_json import json_answer, read_big, same_value
from chatlog.http._routing import (
    Endpoint,
    read_query,
    read_raw_body,
    validate_body,
)
from chatlog.http._state import AppState, state
from chatlog.http.models import Body, JsonObject, Out, Query
from chatlog.identity import ProjectKey
from chatlog.orchestrator.job_records import (
    JobState,
    JobView,
    job_payload,
    list_jobs,
    read_job,
)
from chatlog.orchestrator.jobs import MAX_JOB_ID, MAX_KIND, new_job

BASE = "/v1/projects/{project}/jobs"
ITEM = BASE + "/{job_id}"


class EnqueueJob(Body):
    """Queue a job for ``chatlog worker`` (or any :class:`chatlog.orchestrator.Worker`)."""

    kind: str = Field(min_length=1, max_length=MAX_KIND, description="What the worker runs")
    payload: JsonObject = Field(default_factory=dict)
    workflow_id: str | None = Field(
        default=None, min_length=1, max_length=200,
        description="The workflow the job belongs to (not ended); default: a new one, started",
    )
    job_id: str | None = Field(
        default=None, min_length=1, max_length=MAX_JOB_ID,
        description="Your id for it (idempotent; printable, no '/', not '.' or '..'); "
                    "default job-<uuid4>",
    )
    max_deliveries: int | None = Field(
        default=None, ge=1, le=1000, description="Deliveries before dead-lettering"
    )


class JobsQuery(Query):
    state: JobState | None = Field(
        default=None, description="Only jobs in this state (`dead`: the dead letters)"
    )
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = Field(default=None, max_length=500, description="The next_cursor")


class JobsPage(Out):
    jobs: list[JobView]
    next_cursor: str | None = None


class JobConflict(IntegrityError):
    """A job id reused for a different job."""

    title = "Job id conflict"


async def _same(
    st: AppState, project: ProjectKey, view: JobView, body: EnqueueJob, given: bytes | None
) -> bool:
    if not (
        view.kind == body.kind
        and (body.workflow_id is None or body.workflow_id == view.workflow_id)
        and (body.max_deliveries is None or body.max_deliveries == view.max_deliveries)
    ):
        return False
    stored = await job_payload(st.store, project, view.job_id)
    return stored is not None and await same_value(stored, body.payload, given)


def _job_response(view: JobView, status: int = 200) -> web.Response:
    """The view as JSON, its payload (the stored JSON, a Fragment) written as it is."""
    doc = view.model_dump(mode="json", exclude={"payload"})
    doc["payload"] = view.payload
    return web.Response(status=status, body=orjson.dumps(doc), content_type="application/json")


async def enqueue_job(request: web.Request) -> web.Response:
    """Enqueue a job (201); a repeated ``job_id`` with the same content answers it (200)."""
    st = state(request)
    project = st.authorized_project(request, write=True)
    raw = await read_raw_body(request)
    given: bytes | None = None
    if len(raw) >= offload.BIG:  # parsed and checked in the worker process (issue 15 #9)
        body, blobs = await read_big(EnqueueJob, raw, ("payload",))
        given = blobs["payload"]
    else:
        body = validate_body(raw, EnqueueJob)
    # The job's own checks (kind, job_id) before its workflow exists: a 400 creates nothing.
    new_job(body.kind, body.payload, body.max_deliveries or 1, body.job_id)
    orchestrator = st.orchestrator()
    if body.job_id is not None:
        existing = await read_job(st.store, project, body.job_id, raw=True)
        if existing is not None:
            if not await _same(st, project, existing, body, given):
                raise JobConflict(
                    f"job {body.job_id} exists with another kind, workflow or payload; "
                    "use a new job_id for a different job"
                )
            return _job_response(existing)
    workflow_id = body.workflow_id
    if workflow_id is None:
        created = await orchestrator.create_workflow(project, name=f"job:{body.kind}")
        workflow_id = created.workflow_id
        await orchestrator.start_workflow(project, workflow_id)
    job_id = await orchestrator.enqueue_job(
        project, workflow_id, kind=body.kind, payload=body.payload, job_id=body.job_id,
        max_deliveries=body.max_deliveries,
    )
    view = await read_job(st.store, project, job_id, raw=True)
    if view is None:  # pragma: no cover - pushed just now; only a concurrent reset loses it
        raise NotFound(f"job {job_id} was enqueued but its record is gone")
    return _job_response(view, 201)


async def get_job(request: web.Request) -> web.Response:
    """One job of the project: state, attempts, last error."""
    st = state(request)
    project = st.authorized_project(request)
    job_id = request.match_info["job_id"]
    view = await read_job(st.store, project, job_id, raw=True)
    if view is None:
        raise NotFound(f"job {job_id} does not exist in project {project.display!r}")
    return _job_response(view)


async def list_project_jobs(request: web.Request) -> web.Response:
    """A project's jobs, newest first; ``state=dead`` lists its dead letters."""
    st = state(request)
    project = st.authorized_project(request)
    q = read_query(request, JobsQuery)
    jobs, cursor = await list_jobs(
        st.store, project, state=q.state, limit=q.limit, cursor=q.cursor, raw=True
    )
    # Payloads are the stored JSON (Fragments), written as they are: never parsed here.
    return json_answer(JobsPage.model_construct(jobs=jobs, next_cursor=cursor))


ENDPOINTS = [
    Endpoint(
        "POST", BASE, enqueue_job, "Enqueue a job", "jobs", body=EnqueueJob,
        responses={201: (JobView, "Enqueued"), 200: (JobView, "Enqueued before (same job_id)")},
        errors=(404, 409),
        description="Without `workflow_id` the job gets a workflow of its own (created and "
                    "started). Its lifecycle events go to the workflow's history.",
    ),
    Endpoint(
        "GET", BASE, list_project_jobs, "A project's jobs, newest first", "jobs",
        query=JobsQuery, responses={200: (JobsPage, "A page of jobs; next_cursor continues")},
    ),
    Endpoint(
        "GET", ITEM, get_job, "One job: state, attempts, last error", "jobs",
        responses={200: (JobView, "The job")}, errors=(404,),
    ),
]
