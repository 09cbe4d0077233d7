"""The worker side of jobs: take, run with a lease renewed by heartbeat, finish or retry.

A :class:`Worker` reads jobs with XREADGROUP (group ``workers``), appends
``job.started``, renews its lease every ``lease / 3`` while the handler runs
(XCLAIM JUSTID on its own entry, only while it still owns it), then, if it
still holds the lease, appends ``job.completed`` and acknowledges it (or
appends ``job.failed``). Job events have ids fixed by (job, step), so a
repeated step appends nothing. A job whose worker stopped heartbeating is
idle longer than the lease: another worker reclaims it (``job.reclaimed``)
and runs it again. After ``job_max_deliveries`` deliveries it goes to the
dead-letter stream (``job.dead_lettered``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import traceback
import uuid
from collections.abc import Sequence
from typing import Any

import orjson

from chatlog.errors import StoreUnavailable
from chatlog.events import (
    EventData,
    JobCompleted,
    JobDeadLettered,
    JobFailed,
    JobReclaimed,
    JobStarted,
)
from chatlog.eventstore.codec import flat_fields
from chatlog.eventstore.connection import UNAVAILABLE, stream_items, text
from chatlog.eventstore.store import EventStore
from chatlog.identity import ProjectKey
from chatlog.orchestrator._cancel import raise_if_cancelling
from chatlog.orchestrator.jobs import (
    GROUP,
    JOB_EVENT_NAMESPACE,
    Handler,
    Job,
    ensure_group,
    now_ms,
)
from chatlog.orchestrator.machine import workflow_event
from chatlog.settings import Settings

_UNAVAILABLE: tuple[type[BaseException], ...] = (*UNAVAILABLE, StoreUnavailable)

log = logging.getLogger("chatlog.orchestrator.jobs")

# Claim the oldest entry idle longer than the lease; say who held it and how often
# it was delivered (this claim included). XCLAIM re-checks the idle time, atomically.
_RECLAIM_LUA = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], '-', '+', 1)
if #p == 0 then return {} end
local id, previous, count = p[1][1], p[1][2], p[1][4]
local e = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], id)
if #e == 0 or not e[1] then
  redis.call('XACK', KEYS[1], ARGV[1], id)
  return {'gone', id}
end
return {'ok', id, previous, count + 1, e[1][2]}
"""

# Renew the lease (reset the idle time) only while ARGV[2] still owns the entry;
# with ARGV[4] set, set the idle time to it instead (release: reclaimable now).
_RENEW_LUA = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
if ARGV[4] ~= '' then
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', ARGV[4], 'JUSTID')
else
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
end
return 1
"""


# Move a job to the dead-letter stream: add it there, acknowledge it, mark it dead.
_DEAD_LUA = """
local id = redis.call('XADD', KEYS[2], '*', 'job', ARGV[3], 'project', ARGV[4], 'name', ARGV[5],
  'workflow', ARGV[6], 'kind', ARGV[7], 'payload', ARGV[8], 'deliveries', ARGV[9],
  'reason', ARGV[10], 'entry', ARGV[2], 'worker', ARGV[11])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], 'state', 'dead', 'worker', ARGV[11], 'last_error', ARGV[10],
           'updated_ms', ARGV[12])
return id
"""

# Acknowledge only while still the owner, recording the outcome in the job's hash.
_FINISH_LUA = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], 'state', ARGV[4], 'worker', ARGV[2], 'updated_ms', ARGV[5])
return 1
"""


def _job_of(partition: int, entry_id: str, fields: dict[bytes, bytes], delivery: int) -> Job:
    return Job(
        id=text(fields[b"job"]),
        kind=text(fields[b"kind"]),
        payload=orjson.loads(fields[b"payload"]),
        project=ProjectKey(uuid.UUID(text(fields[b"project"])), text(fields[b"name"])),
        workflow_id=text(fields[b"workflow"]),
        partition=partition,
        entry_id=entry_id,
        delivery=delivery,
        max_deliveries=int(fields[b"max"]),
    )


class Worker:
    """Takes jobs from the partitions' job streams and runs ``handler`` on each.

    ``run()`` loops until ``stop()``: reclaim a job whose lease lapsed, else
    read a new one; one job at a time. The handler returns a dict (the
    result) or None; raising fails that delivery (it is retried on a later
    delivery until ``job_max_deliveries``).
    """

    def __init__(
        self,
        store: EventStore,
        settings: Settings,
        handler: Handler,
        *,
        name: str | None = None,
        partitions: Sequence[int] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.handler = handler
        self.name = name or f"worker-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.partitions = list(partitions) if partitions is not None else list(
            range(store.partitions)
        )
        self.lease_ms = max(1, int(settings.job_lease * 1000))
        self.block = min(1.0, settings.job_lease / 2)
        self._redis: Any = store.redis
        self._reclaim = self._redis.register_script(_RECLAIM_LUA)
        self._renew = self._redis.register_script(_RENEW_LUA)
        self._finish = self._redis.register_script(_FINISH_LUA)
        self._dead = self._redis.register_script(_DEAD_LUA)
        self._stopping = asyncio.Event()
        #: Jobs this worker finished (completed, failed or dead-lettered), for operators and tests.
        self.processed = 0

    async def stop(self) -> None:
        """Finish the current job, then make ``run()`` return."""
        self._stopping.set()

    async def run(self) -> None:
        for p in self.partitions:
            await ensure_group(self.store, p)
        log.info("worker %s: taking jobs (lease %.3g s)", self.name, self.settings.job_lease)
        while not self._stopping.is_set():
            try:
                job = await self._next()
                raise_if_cancelling()
                if job is not None:
                    await self._process(job)
            except _UNAVAILABLE as exc:
                raise_if_cancelling()
                log.warning("worker %s: store unavailable (%s); retrying", self.name, exc)
                await self._pause(0.5)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    # -- taking jobs --------------------------------------------------------------

    async def _next(self) -> Job | None:
        for p in self.partitions:
            job = await self._take_lapsed(p)
            if job is not None:
                return job
        block_ms = max(1, int(self.block * 1000 / len(self.partitions)))
        for p in self.partitions:
            reply = await self._redis.xreadgroup(
                GROUP, self.name, {self.store.keys.jobs(p): ">"}, count=1, block=block_ms
            )
            for _, entries in stream_items(reply):
                for entry_id, flat in entries:
                    job = await self._accept(p, text(entry_id), flat_fields(flat), 1, None)
                    if job is not None:
                        return job
        return None

    async def _take_lapsed(self, p: int) -> Job | None:
        reply = await self._reclaim(
            keys=[self.store.keys.jobs(p)], args=[GROUP, self.name, self.lease_ms]
        )
        if not reply or text(reply[0]) != "ok":
            return None
        entry_id, previous, delivery = text(reply[1]), text(reply[2]), int(reply[3])
        return await self._accept(p, entry_id, flat_fields(reply[4]), delivery, previous)

    async def _accept(
        self, p: int, entry_id: str, fields: dict[bytes, bytes], delivery: int, previous: str | None
    ) -> Job | None:
        """A job to run, or None when it was done before or has used up its deliveries."""
        job = _job_of(p, entry_id, fields, delivery)
        state = await self._redis.hget(self.store.keys.job(p, job.id), "state")
        if state in (b"completed", b"dead"):
            await self._redis.xack(self.store.keys.jobs(p), GROUP, entry_id)
            return None
        if delivery > job.max_deliveries:
            await self._dead_letter(
                job, delivery - 1,
                f"not finished after {delivery - 1} deliveries "
                f"(max_deliveries {job.max_deliveries}); last held by {previous}",
            )
            return None
        if previous is not None:
            log.warning("worker %s: reclaimed job %s from %s (delivery %d)",
                        self.name, job.id, previous, delivery)
            await self._append(job, JobReclaimed(
                job_id=job.id, worker=self.name, previous_worker=previous, delivery=delivery),
                f"reclaimed/{delivery}")
        return job

    # -- running one -------------------------------------------------------------------

    async def _process(self, job: Job) -> None:
        keys = self.store.keys
        record = keys.job(job.partition, job.id)
        await self._redis.hset(
            record, mapping={"state": "running", "worker": self.name, "updated_ms": now_ms()}
        )
        await self._redis.hincrby(record, "attempts", 1)
        await self._append(
            job, JobStarted(job_id=job.id, worker=self.name, delivery=job.delivery),
            f"started/{job.delivery}",
        )
        loop = asyncio.get_running_loop()
        work: asyncio.Task[dict[str, Any] | None] = loop.create_task(
            _run_handler(self.handler, job), name=f"job-{job.id}"
        )
        lost = asyncio.Event()
        heartbeat = loop.create_task(self._heartbeat(job, work, lost))
        try:
            result = await work
        except asyncio.CancelledError:
            if not lost.is_set():
                raise
            log.warning("worker %s: lost the lease of job %s; another worker has it",
                        self.name, job.id)
            return
        except Exception as exc:
            await self._failed(job, exc)
            return
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        # Still ours? Then record, then acknowledge. A crash in between redelivers
        # the job (at least once); its completed event has a fixed id, so a
        # second completion appends nothing.
        if not await self._owns(job):
            log.warning("worker %s: job %s finished after its lease lapsed; not recorded",
                        self.name, job.id)
            return
        await self._append(
            job, JobCompleted(job_id=job.id, worker=self.name, result=result or {}), "completed"
        )
        await self._owner_finish(job, "completed")
        self.processed += 1

    async def _heartbeat(self, job: Job, work: asyncio.Task[Any], lost: asyncio.Event) -> None:
        interval = self.settings.job_lease / 3
        while True:
            await asyncio.sleep(interval)
            try:
                owned = await self._owns(job)
            except _UNAVAILABLE as exc:
                raise_if_cancelling()
                log.warning("worker %s: heartbeat of job %s failed (%s)", self.name, job.id, exc)
                continue
            raise_if_cancelling()
            if not owned:
                lost.set()
                work.cancel()
                return

    async def _owns(self, job: Job) -> bool:
        """Renew the lease if this worker still holds it; False when it does not."""
        owned = await self._renew(
            keys=[self.store.keys.jobs(job.partition)],
            args=[GROUP, self.name, job.entry_id, ""],
        )
        return bool(owned)

    async def _owner_finish(self, job: Job, state: str) -> bool:
        keys = self.store.keys
        done = await self._finish(
            keys=[keys.jobs(job.partition), keys.job(job.partition, job.id)],
            args=[GROUP, self.name, job.entry_id, state, now_ms()],
        )
        return bool(done)

    async def _failed(self, job: Job, exc: Exception) -> None:
        error = "".join(traceback.format_exception_only(exc)).strip()
        log.warning("worker %s: job %s failed on delivery %d: %s",
                    self.name, job.id, job.delivery, error)
        await self._append(job, JobFailed(
            job_id=job.id, worker=self.name, error=error, delivery=job.delivery),
            f"failed/{job.delivery}")
        self.processed += 1
        await self._redis.hset(
            self.store.keys.job(job.partition, job.id),
            mapping={"last_error": error, "updated_ms": now_ms()},
        )
        if job.delivery >= job.max_deliveries:
            await self._dead_letter(
                job, job.delivery, f"failed on each of {job.delivery} deliveries; last: {error}"
            )
            return
        # Release it: reclaimable at once (by any worker) instead of after the lease.
        await self._redis.hset(self.store.keys.job(job.partition, job.id), "state", "queued")
        await self._renew(
            keys=[self.store.keys.jobs(job.partition)],
            args=[GROUP, self.name, job.entry_id, str(self.lease_ms + 1)],
        )

    async def _dead_letter(self, job: Job, deliveries: int, reason: str) -> None:
        keys = self.store.keys
        p = job.partition
        await self._dead(
            keys=[keys.jobs(p), keys.dead_letters(p), keys.job(p, job.id)],
            args=[GROUP, job.entry_id, job.id, str(job.project.key), job.project.display,
                  job.workflow_id, job.kind, orjson.dumps(job.payload), deliveries, reason,
                  self.name, now_ms()],
        )
        log.error("worker %s: job %s (%s, workflow %s) dead-lettered: %s",
                  self.name, job.id, job.kind, job.workflow_id, reason)
        await self._append(
            job, JobDeadLettered(job_id=job.id, deliveries=deliveries, reason=reason), "dead"
        )

    async def _append(self, job: Job, data: EventData, step: str) -> None:
        """Append a job event whose id is fixed by (job, step): a repeat appends nothing."""
        event_id = uuid.uuid5(JOB_EVENT_NAMESPACE, f"{job.id}/{step}")
        await self.store.append_one(workflow_event(job.project, job.workflow_id, data, event_id))


async def _run_handler(handler: Handler, job: Job) -> dict[str, Any] | None:
    return await handler(job)
