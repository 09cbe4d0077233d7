"""Jobs: consumer groups, heartbeat leases, reclaim after a worker is killed, dead letters."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import pytest

from chatlog.errors import InvalidInput, InvalidTransition
from chatlog.events import RecordedEvent
from chatlog.eventstore import EventStore
from chatlog.identity import ProjectKey
from chatlog.orchestrator import Job, Orchestrator, Worker, list_dead_letters
from chatlog.settings import Settings
from tests.helpers import eventually


async def _events_until(
    store: EventStore, project: ProjectKey, wid: str,
    done: Callable[[list[RecordedEvent]], bool], timeout: float = 30.0,
) -> list[RecordedEvent]:
    async def read() -> list[RecordedEvent] | None:
        events = await store.read_aggregate(project.key, "workflow", wid)
        return events if done(events) else None

    found = await eventually(read, timeout=timeout, what=f"the events of workflow {wid}")
    assert isinstance(found, list)
    return found


def _jobs(events: list[RecordedEvent]) -> list[tuple[str, dict[str, Any]]]:
    return [(e.type, e.data) for e in events if e.type.startswith("job.")]


class Workers:
    """Run in-process workers as tasks; cancel what is left at the end."""

    def __init__(self, store: EventStore, settings: Settings) -> None:
        self.store, self.settings = store, settings
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, handler: Any, name: str, **overrides: Any) -> tuple[Worker, asyncio.Task[None]]:
        s = self.settings.model_copy(update=overrides) if overrides else self.settings
        w = Worker(self.store, s, handler, name=name)
        t = asyncio.create_task(w.run())
        self.tasks.append(t)
        return w, t

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.fixture
async def workers(store: EventStore, settings: Settings) -> Any:
    w = Workers(store, settings)
    yield w
    await w.close()


async def _running(o: Orchestrator, project: ProjectKey) -> str:
    wid = (await o.create_workflow(project, start_timeout=60)).workflow_id
    await o.start_workflow(project, wid)
    return wid


async def test_a_job_runs_and_its_lifecycle_is_in_the_workflow_history(
    orchestrator: Orchestrator, project: ProjectKey, store: EventStore, workers: Workers,
) -> None:
    wid = await _running(orchestrator, project)
    seen: list[Job] = []

    async def handler(job: Job) -> dict[str, Any]:
        seen.append(job)
        return {"echo": job.payload["n"]}

    job_id = await orchestrator.enqueue_job(project, wid, kind="summarise", payload={"n": 7})
    w, task = workers.start(handler, "w1")
    events = await _events_until(store, project, wid,
                                 lambda es: any(e.type == "job.completed" for e in es))
    assert [t for t, _ in _jobs(events)] == ["job.enqueued", "job.started", "job.completed"]
    assert _jobs(events)[2][1] == {"job_id": job_id, "worker": "w1", "result": {"echo": 7}}
    assert seen[0].id == job_id and seen[0].delivery == 1 and seen[0].workflow_id == wid
    view = await orchestrator.get_workflow(project, wid)
    assert view.state == "running"  # jobs never change the workflow's state
    assert [h.type for h in view.history][-3:] == ["job.enqueued", "job.started", "job.completed"]
    await w.stop()
    await asyncio.wait_for(task, 10)
    assert w.processed == 1


async def test_enqueue_is_refused_for_ended_or_missing_workflows(
    orchestrator: Orchestrator, project: ProjectKey
) -> None:
    wid = await _running(orchestrator, project)
    with pytest.raises(InvalidInput):
        await orchestrator.enqueue_job(project, wid, kind="")
    await orchestrator.complete(project, wid)
    with pytest.raises(InvalidTransition, match="it is completed"):
        await orchestrator.enqueue_job(project, wid, kind="late")


async def test_heartbeats_keep_a_long_job_with_its_worker(
    orchestrator: Orchestrator, project: ProjectKey, store: EventStore, workers: Workers,
) -> None:
    wid = await _running(orchestrator, project)
    lease = 1.0

    async def slow(job: Job) -> dict[str, Any]:
        await asyncio.sleep(2.5 * lease)  # far longer than the lease
        return {}

    await orchestrator.enqueue_job(project, wid, kind="slow")
    workers.start(slow, "holder", job_lease=lease)
    await _events_until(store, project, wid, lambda es: any(e.type == "job.started" for e in es))
    workers.start(slow, "thief", job_lease=lease)  # would reclaim it if the lease lapsed
    events = await _events_until(store, project, wid,
                                 lambda es: any(e.type == "job.completed" for e in es))
    types = [t for t, _ in _jobs(events)]
    assert "job.reclaimed" not in types
    assert types == ["job.enqueued", "job.started", "job.completed"]
    assert _jobs(events)[2][1]["worker"] == "holder"


async def test_a_worker_killed_mid_job_loses_it_to_another_worker(
    orchestrator: Orchestrator, project: ProjectKey, store: EventStore, workers: Workers,
    settings: Settings, tmp_path: Any,
) -> None:
    wid = await _running(orchestrator, project)
    job_id = await orchestrator.enqueue_job(project, wid, kind="sleep", payload={"seconds": 60})
    env = {**os.environ, "CHATLOG_REDIS_URL": str(settings.redis_url),
           "CHATLOG_KEY_PREFIX": settings.key_prefix, "CHATLOG_JOB_LEASE": "0.5",
           "CHATLOG_DATA_DIR": str(tmp_path)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chatlog", "worker", "--name", "victim",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await _events_until(store, project, wid,
                            lambda es: any(e.type == "job.started" for e in es), timeout=60)
        os.kill(proc.pid, signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), 10)

    ran: list[Job] = []

    async def quick(job: Job) -> dict[str, Any]:
        ran.append(job)
        return {"done": True}

    workers.start(quick, "rescuer")
    events = await _events_until(store, project, wid,
                                 lambda es: any(e.type == "job.completed" for e in es))
    jobs = _jobs(events)
    assert [t for t, _ in jobs] == [
        "job.enqueued", "job.started", "job.reclaimed", "job.started", "job.completed"]
    assert jobs[1][1]["worker"] == "victim"
    assert jobs[2][1] == {"job_id": job_id, "worker": "rescuer", "previous_worker": "victim",
                          "delivery": 2}
    assert jobs[4][1]["worker"] == "rescuer"
    assert [j.delivery for j in ran] == [2]
    assert await list_dead_letters(store) == []


async def test_a_job_that_always_fails_is_dead_lettered_after_n_deliveries(
    orchestrator: Orchestrator, project: ProjectKey, store: EventStore, workers: Workers,
) -> None:
    wid = await _running(orchestrator, project)

    async def broken(job: Job) -> dict[str, Any]:
        raise RuntimeError(f"boom on delivery {job.delivery}")

    job_id = await orchestrator.enqueue_job(project, wid, kind="broken", payload={"x": 1})
    workers.start(broken, "w1")
    events = await _events_until(store, project, wid,
                                 lambda es: any(e.type == "job.dead_lettered" for e in es))
    jobs = _jobs(events)
    failed = [d for t, d in jobs if t == "job.failed"]
    assert [d["delivery"] for d in failed] == [1, 2, 3]  # job_max_deliveries = 3
    assert "RuntimeError: boom on delivery 3" in failed[-1]["error"]
    dead = [d for t, d in jobs if t == "job.dead_lettered"]
    assert len(dead) == 1 and dead[0]["deliveries"] == 3
    letters = await orchestrator.dead_letters()
    assert [(d.job_id, d.kind, d.workflow_id, d.deliveries) for d in letters] == [
        (job_id, "broken", wid, 3)]
    assert letters[0].payload == {"x": 1} and "boom on delivery 3" in letters[0].reason


async def test_a_job_whose_workers_keep_crashing_is_dead_lettered(
    orchestrator_factory: Callable[..., Any], project: ProjectKey, store: EventStore,
    workers: Workers,
) -> None:
    orchestrator: Orchestrator = await orchestrator_factory(job_max_deliveries=2)
    wid = await _running(orchestrator, project)
    job_id = await orchestrator.enqueue_job(project, wid, kind="hang")

    async def hang(job: Job) -> dict[str, Any]:
        await asyncio.sleep(60)
        return {}

    for n, name in enumerate(("crash-1", "crash-2"), start=1):
        _, task = workers.start(hang, name)
        await _events_until(
            store, project, wid,
            lambda es, n=n: sum(e.type == "job.started" for e in es) == n)
        task.cancel()  # the worker dies mid-job: no ack, no more heartbeats
        await asyncio.gather(task, return_exceptions=True)
    workers.start(hang, "third")
    events = await _events_until(store, project, wid,
                                 lambda es: any(e.type == "job.dead_lettered" for e in es))
    jobs = _jobs(events)
    assert [t for t, _ in jobs] == ["job.enqueued", "job.started", "job.reclaimed",
                                    "job.started", "job.dead_lettered"]
    assert jobs[-1][1]["deliveries"] == 2 and "crash-2" in jobs[-1][1]["reason"]
    assert [d.job_id for d in await list_dead_letters(store)] == [job_id]


async def test_a_job_whose_push_was_lost_is_queued_from_the_log(
    orchestrator: Orchestrator, project: ProjectKey, store: EventStore, workers: Workers,
) -> None:
    from chatlog.events import JobEnqueued, NewEvent

    wid = await _running(orchestrator, project)
    queued = await orchestrator.enqueue_job(project, wid, kind="normal")
    # as if enqueue_job crashed after appending job.enqueued, before pushing the job
    lost = JobEnqueued(job_id="job-lost-1", kind="lost", payload={"n": 1}, max_deliveries=3)
    await store.append_one(NewEvent.of(lost, project=project.key, project_name=project.display,
                                       aggregate_type="workflow", aggregate_id=wid))
    done: list[str] = []

    async def handler(job: Job) -> dict[str, Any]:
        done.append(job.id)
        return {}

    workers.start(handler, "w1")
    await _events_until(store, project, wid,
                        lambda es: sum(e.type == "job.completed" for e in es) == 2)
    assert sorted(done) == sorted([queued, "job-lost-1"])
    assert await store.redis.xlen(store.keys.jobs(0)) == 2  # each pushed once


async def test_a_crash_between_recording_and_acknowledging_completes_once(
    orchestrator: Orchestrator, project: ProjectKey, store: EventStore, workers: Workers,
    settings: Settings,
) -> None:
    wid = await _running(orchestrator, project)
    runs: list[str] = []

    async def handler(job: Job) -> dict[str, Any]:
        runs.append(job.id)
        return {"n": len(runs)}

    class CrashBeforeAck(Worker):
        async def _owner_finish(self, job: Job, state: str) -> bool:
            raise asyncio.CancelledError  # the process dies right after job.completed

    await orchestrator.enqueue_job(project, wid, kind="once")
    crashing = CrashBeforeAck(store, settings, handler, name="crashes")
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(crashing.run(), 20)
    workers.start(handler, "finisher")  # reclaims it after the lease and runs it again
    async def settled() -> bool:
        pending = (await store.redis.xpending(store.keys.jobs(0), "workers"))["pending"]
        return not pending and len(runs) >= 2

    await eventually(settled, timeout=30, what="the job ran again and was acknowledged")
    events = await store.read_aggregate(project.key, "workflow", wid)
    jobs = [t for t, _ in _jobs(events)]
    assert len(runs) == 2  # at least once: the handler ran again
    assert jobs == ["job.enqueued", "job.started", "job.completed", "job.reclaimed",
                    "job.started"]  # the second completion appended nothing
