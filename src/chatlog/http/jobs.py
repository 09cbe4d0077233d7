"""Jobs over HTTP: enqueue one, list a project's jobs by state (dead letters too), inspect one.

A job belongs to a workflow (its lifecycle events are in the workflow's
history). Enqueued without ``workflow_id``, the job gets a workflow of its
own, created and started for it (named ``job:<kind>``). A ``job_id`` makes
the enqueue idempotent: the same id with the same kind, workflow and payload
answers the job (200); with other content it is a 409.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import Field

from chatlog.errors import IntegrityError, NotFound
from chatlog.http._routing import Endpoint, json_response, read_body, read_query
from chatlog.http._state import state
from chatlog.http.models import Body, JsonObject, Out, Query
from chatlog.orchestrator.job_records import JobState, JobView, list_jobs, read_job
from chatlog.orchestrator.jobs import MAX_JOB_ID, MAX_KIND

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
        description="Your id for it (idempotent); default job-<uuid4>",
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


def _same(view: JobView, body: EnqueueJob) -> bool:
    return (
        view.kind == body.kind
        and view.payload == body.payload
        and (body.workflow_id is None or body.workflow_id == view.workflow_id)
        and (body.max_deliveries is None or body.max_deliveries == view.max_deliveries)
    )


async def enqueue_job(request: web.Request) -> web.Response:
    """Enqueue a job (201); a repeated ``job_id`` with the same content answers it (200)."""
    st = state(request)
    project = st.authorized_project(request, write=True)
    body = await read_body(request, EnqueueJob)
    orchestrator = st.orchestrator()
    if body.job_id is not None:
        existing = await read_job(st.store, project, body.job_id)
        if existing is not None:
            if not _same(existing, body):
                raise JobConflict(
                    f"job {body.job_id} exists with another kind, workflow or payload; "
                    "use a new job_id for a different job"
                )
            return json_response(existing)
    workflow_id = body.workflow_id
    if workflow_id is None:
        created = await orchestrator.create_workflow(project, name=f"job:{body.kind}")
        workflow_id = created.workflow_id
        await orchestrator.start_workflow(project, workflow_id)
    job_id = await orchestrator.enqueue_job(
        project, workflow_id, kind=body.kind, payload=body.payload, job_id=body.job_id,
        max_deliveries=body.max_deliveries,
    )
    view = await read_job(st.store, project, job_id)
    if view is None:  # pragma: no cover - pushed just now; only a concurrent reset loses it
        raise NotFound(f"job {job_id} was enqueued but its record is gone")
    return json_response(view, 201)


async def get_job(request: web.Request) -> web.Response:
    """One job of the project: state, attempts, last error."""
    st = state(request)
    project = st.authorized_project(request)
    job_id = request.match_info["job_id"]
    view = await read_job(st.store, project, job_id)
    if view is None:
        raise NotFound(f"job {job_id} does not exist in project {project.display!r}")
    return json_response(view)


async def list_project_jobs(request: web.Request) -> web.Response:
    """A project's jobs, newest first; ``state=dead`` lists its dead letters."""
    st = state(request)
    project = st.authorized_project(request)
    q = read_query(request, JobsQuery)
    jobs, cursor = await list_jobs(
        st.store, project, state=q.state, limit=q.limit, cursor=q.cursor
    )
    return json_response(JobsPage(jobs=jobs, next_cursor=cursor))


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
