"""The orchestrator on a partitioned log, on one server and on a 3-master Redis Cluster.

Each partition's keys share a hash tag, so every script (append, job push,
lease renewal, dead letter) touches one slot; one tailer per partition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from chatlog.errors import InvalidTransition, WaitTimeout
from chatlog.identity import normalize_project_id
from chatlog.orchestrator import Job, Orchestrator, Worker
from chatlog.settings import Settings
from tests.helpers import eventually

pytestmark = pytest.mark.also_on_cluster


async def test_waits_timeouts_races_and_jobs_across_partitions(
    store_factory: Callable[..., Any], settings: Settings,
) -> None:
    store = await store_factory(partitions=3)
    s = settings.model_copy(update={"partitions": 3, "job_max_deliveries": 2})
    o = Orchestrator(store, s)
    await o.start()
    worker_task: asyncio.Task[None] | None = None
    try:
        projects = [normalize_project_id(f"cluster-project-{i}") for i in range(4)]
        assert len({store.partition_of(p.key) for p in projects}) > 1
        for p in projects:
            late = (await o.create_workflow(p, start_timeout=0.3)).workflow_id
            wid = (await o.create_workflow(p, start_timeout=60)).workflow_id
            waiting = asyncio.create_task(o.wait_for_start(p, wid))
            await asyncio.wait_for(o.until_blocked(p, wid), 10)
            await o.start_workflow(p, wid)
            assert (await asyncio.wait_for(waiting, 20)).type == "workflow.started"
            with pytest.raises(WaitTimeout, match="start_task"):
                await asyncio.wait_for(o.wait_for_start(p, late), 20)
            await o.request_approval(p, wid, timeout=60)
            results = await asyncio.gather(o.decide_approval(p, wid, approved=True),
                                           o.decide_approval(p, wid, approved=False),
                                           return_exceptions=True)
            assert sum(isinstance(r, InvalidTransition) for r in results) == 1

        async def handler(job: Job) -> dict[str, Any]:
            if job.kind == "bad":
                raise RuntimeError("always")
            return {"ok": job.partition}

        worker = Worker(store, s, handler, name="cw")
        worker_task = asyncio.create_task(worker.run())
        jobs = []
        for p in projects:
            wid = (await o.create_workflow(p, start_timeout=60)).workflow_id
            await o.start_workflow(p, wid)
            jobs.append((p, wid, await o.enqueue_job(p, wid, kind="good")))
        bad_p, bad_wid, _ = jobs[0]
        bad = await o.enqueue_job(bad_p, bad_wid, kind="bad")
        async def all_done() -> bool:
            return len(await o.dead_letters()) >= 1 and worker.processed >= len(jobs) + 2

        await eventually(all_done, timeout=30, what="every job done")
        for p, wid, job_id in jobs:
            view = await o.get_workflow(p, wid)
            done = [h.data for h in view.history if h.type == "job.completed"]
            assert [d["job_id"] for d in done] == [job_id]
        assert [d.job_id for d in await o.dead_letters()] == [bad]
    finally:
        if worker_task is not None:
            worker_task.cancel()
            await asyncio.gather(worker_task, return_exceptions=True)
        await o.stop()
