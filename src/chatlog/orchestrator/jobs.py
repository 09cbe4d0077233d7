"""Jobs: the producer side and what every side shares (the job stream's shape).

``Orchestrator.enqueue_job`` appends ``job.enqueued`` to the workflow and adds
the job to the partition's job stream (:class:`JobQueue`). A
:class:`~chatlog.orchestrator.worker.Worker` takes it through the consumer
group ``workers`` with a lease renewed by heartbeat; operators inspect the
streams with :mod:`chatlog.orchestrator.job_admin`. Delivery is at least
once: a handler may run again after a crash.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from redis import exceptions as rexc

from chatlog.errors import InvalidInput
from chatlog.events import JobEnqueued
from chatlog.eventstore.connection import text
from chatlog.eventstore.store import EventStore
from chatlog.identity import ProjectKey
from chatlog.settings import Settings

GROUP = "workers"
#: uuid5 namespace of job event ids (``<job id>/<step>``), which makes them idempotent.
JOB_EVENT_NAMESPACE = uuid.UUID("4b1d6a52-5a8e-5c7b-9f0e-6a6f62730001")
MAX_KIND = 100
MAX_JOB_ID = 200

# was pushed before (whatever became of it since).
_PUSH_LUA = """
if redis.call('EXISTS', KEYS[2]) == 1 then return false end
local entry = redis.call('XADD', KEYS[1], '*', 'job', ARGV[5], 'project', ARGV[1],
                         'name', ARGV[2], 'workflow', ARGV[3], 'kind', ARGV[4],
                         'payload', ARGV[6], 'max', ARGV[7])
redis.call('HSET', KEYS[2], 'state', 'queued', 'workflow', ARGV[3], 'project', ARGV[1],
           'name', ARGV[2], 'kind', ARGV[4], 'payload', ARGV[6], 'max', ARGV[7],
           'attempts', 0, 'enqueued_ms', ARGV[8], 'updated_ms', ARGV[8], 'entry', entry)
redis.call('ZADD', KEYS[3], ARGV[8], ARGV[5])
return entry
"""


@dataclass(frozen=True, slots=True)
class Job:
    """A job as a handler sees it."""

    id: str
    kind: str
    payload: dict[str, Any]
    project: ProjectKey
    workflow_id: str
    partition: int
    #: The job's entry id in the partition's job stream.
    entry_id: str
    #: 1 for the first delivery, 2 after the first reclaim, ...
    delivery: int
    max_deliveries: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A job that used up its deliveries, as operators see it."""

    job_id: str
    kind: str
    payload: dict[str, Any]
    project: uuid.UUID
    project_name: str
    workflow_id: str
    deliveries: int
    reason: str
    partition: int
    #: The dead-letter entry's id (its time of arrival).
    position: str


Handler = Callable[[Job], Awaitable[dict[str, Any] | None]]


def now_ms() -> int:
    """Wall-clock milliseconds, as job records keep their times."""
    return int(time.time() * 1000)


def check_job_id(job_id: str) -> str:
    """A job id as given, or :class:`InvalidInput` saying what a valid one is."""
    if (
        not job_id or len(job_id) > MAX_JOB_ID or "/" in job_id
        or not job_id.isprintable() or job_id != job_id.strip() or job_id in (".", "..")
    ):
        raise InvalidInput(
            f"job id {job_id!r} is not valid: use 1 to {MAX_JOB_ID} printable characters "
            "without '/' or surrounding spaces, other than '.' and '..' (a URL's path "
            "cannot name those)"
        )
    return job_id


def new_job(
    kind: str, payload: dict[str, Any] | orjson.Fragment | None, max_deliveries: int,
    job_id: str | None = None,
) -> JobEnqueued:
    if not kind or len(kind) > MAX_KIND or not kind.isprintable():
        raise InvalidInput(f"job kind {kind!r} must be 1 to {MAX_KIND} printable characters")
    if payload is not None and not isinstance(payload, dict | orjson.Fragment):
        raise InvalidInput("a job payload must be a JSON object")
    if max_deliveries < 1:
        raise InvalidInput(f"max_deliveries must be at least 1, not {max_deliveries}")
    # A Fragment: a big payload's JSON object, checked in the worker process (issue 15 #9).
    make: Any = (
        JobEnqueued.model_construct if isinstance(payload, orjson.Fragment) else JobEnqueued
    )
    return make(  # type: ignore[no-any-return]
        job_id=check_job_id(job_id) if job_id is not None else f"job-{uuid.uuid4()}",
        kind=kind,
        payload=payload or {},
        max_deliveries=max_deliveries,
    )


async def ensure_group(store: EventStore, partition: int) -> None:
    """Create the ``workers`` group on the partition's job stream (idempotent)."""
    redis: Any = store.redis
    try:
        await redis.xgroup_create(store.keys.jobs(partition), GROUP, id="0", mkstream=True)
    except rexc.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


class JobQueue:
    """The producer side: put enqueued jobs on their partition's stream."""

    def __init__(self, store: EventStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._grouped: set[int] = set()
        redis: Any = store.redis
        self._push = redis.register_script(_PUSH_LUA)

    async def push(
        self, project: ProjectKey, workflow_id: str, job: JobEnqueued
    ) -> str | None:
        """Add an enqueued job to its partition's job stream; its entry id.

        None when the job was pushed before (idempotent by job id).
        """
        p = self.store.partition_of(project.key)
        if p not in self._grouped:
            await ensure_group(self.store, p)
            self._grouped.add(p)
        keys = self.store.keys
        entry = await self._push(
            keys=[
                keys.jobs(p), keys.job(p, project.key, job.job_id), keys.job_index(p, project.key)
            ],
            args=[str(project.key), project.display, workflow_id, job.kind, job.job_id,
                  orjson.dumps(job.payload), job.max_deliveries, now_ms()],
        )
        return None if entry is None else text(entry)
