"""Jobs as operators and clients see them: one job's record, a project's jobs by state.

Each job has a record (a hash next to its partition's job stream) that the
queue writes when it pushes the job and the workers update as they run it;
a per-project sorted set (scored by enqueue time) lists a project's jobs.
The job's lifecycle events stay in its workflow's history; the record is
the quick answer to "where is job X".
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict

from chatlog.events import time_of
from chatlog.eventstore.connection import text
from chatlog.eventstore.store import EventStore
from chatlog.identity import ProjectKey
from chatlog.pages import decode_cursor, encode_cursor

JobState = Literal["pending", "running", "done", "dead"]
#: Job states as the API names them.
JOB_STATES: tuple[JobState, ...] = ("pending", "running", "done", "dead")
#: Record state -> API state.
_STATE_OF: dict[str, JobState] = {
    "queued": "pending", "running": "running", "completed": "done", "dead": "dead",
}
_SCAN = 200


class JobView(BaseModel):
    """A job as the API shows it."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    #: The normalised project key.
    project: uuid.UUID
    kind: str
    workflow_id: str
    #: ``pending`` (queued or released for a retry), ``running``, ``done``, ``dead``.
    state: JobState
    #: Deliveries so far (a reclaimed or retried job counts each).
    attempts: int
    max_deliveries: int
    #: The last failure (or the dead-letter reason); null if none.
    last_error: str | None
    enqueued_at: datetime
    updated_at: datetime
    payload: dict[str, Any]


def view_of(job_id: str, record: dict[Any, Any], *, raw: bool = False) -> JobView | None:
    """The view of a job record (HGETALL reply); None for a missing or foreign record.

    ``raw``: its payload is the stored JSON as an ``orjson.Fragment``, not parsed
    (a big payload is never parsed in the event loop's process, issue 15 #9)."""
    f = {text(k): v for k, v in record.items()}
    if "kind" not in f or "project" not in f:
        return None
    entry_ms = int(text(f.get("entry"), "0-0").split("-", 1)[0])
    enqueued = int(text(f.get("enqueued_ms"), str(entry_ms)))
    error = f.get("last_error")
    payload: Any = f.get("payload", b"{}")
    if raw:
        payload = orjson.Fragment(payload)
    return (JobView.model_construct if raw else JobView)(
        job_id=job_id,
        project=uuid.UUID(text(f["project"])),
        kind=text(f["kind"]),
        workflow_id=text(f.get("workflow")),
        state=_STATE_OF.get(text(f.get("state")), "pending"),
        attempts=int(text(f.get("attempts"), "0")),
        max_deliveries=int(text(f.get("max"), "0")),
        last_error=text(error) if error is not None else None,
        enqueued_at=time_of(enqueued),
        updated_at=time_of(int(text(f.get("updated_ms"), str(enqueued)))),
        payload=payload if raw else orjson.loads(payload),
    )


async def read_job(
    store: EventStore, project: ProjectKey, job_id: str, *, raw: bool = False
) -> JobView | None:
    """One job of ``project``; None if the project has no job with that id
    (``raw``: its payload unparsed, as :func:`view_of` says)."""
    p = store.partition_of(project.key)
    redis: Any = store.redis
    record = await redis.hgetall(store.keys.job(p, project.key, job_id))
    view = view_of(job_id, record, raw=raw)
    if view is None or view.project != project.key:
        return None
    return view


async def list_jobs(
    store: EventStore,
    project: ProjectKey,
    *,
    state: JobState | None = None,
    limit: int = 50,
    cursor: str | None = None,
    raw: bool = False,
) -> tuple[list[JobView], str | None]:
    """A project's jobs, newest first (only ``state`` if given); the page and its next cursor
    (``raw``: payloads unparsed, as :func:`view_of` says)."""
    p = store.partition_of(project.key)
    redis: Any = store.redis
    index = store.keys.job_index(p, project.key)
    after = decode_cursor(cursor, (int, str)) if cursor else None
    top: int | str = after[0] if after else "+inf"
    offset = 0
    out: list[JobView] = []
    last: tuple[int, str] | None = None
    while True:
        members = await redis.zrevrangebyscore(
            index, top, "-inf", start=offset, num=_SCAN, withscores=True
        )
        if not members:
            return out, None
        offset += len(members)
        ids: list[tuple[str, int]] = []
        for member, score in members:
            job_id, ms = text(member), int(score)
            # Same millisecond: members come in reverse order, so resume below the cursor's.
            if after is not None and ms == after[0] and job_id >= after[1]:
                continue
            ids.append((job_id, ms))
        pipe = redis.pipeline(transaction=False)
        for job_id, _ in ids:
            pipe.hgetall(store.keys.job(p, project.key, job_id))
        records = await pipe.execute() if ids else []
        for (job_id, ms), record in zip(ids, records, strict=True):
            view = view_of(job_id, record, raw=raw)
            if view is None or view.project != project.key:
                continue
            if state is not None and view.state != state:
                continue
            if len(out) == limit:
                assert last is not None
                return out, encode_cursor(last)
            out.append(view)
            last = (ms, job_id)
        if len(members) < _SCAN:
            return out, None


async def job_payload(store: EventStore, project: ProjectKey, job_id: str) -> bytes | None:
    """A job's payload as stored (JSON); None when there is no such job."""
    p = store.partition_of(project.key)
    redis: Any = store.redis
    stored = await redis.hget(store.keys.job(p, project.key, job_id), "payload")
    return None if stored is None else bytes(stored)
