"""Waits: never miss an event that lands before the wait blocks, thousands of waits on one
connection, and deadlines that survive an orchestrator restart."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis

from chatlog.errors import InvalidTransition, OrchestratorStopped, WaitTimeout
from chatlog.eventstore import EmbeddedValkey, EventStore
from chatlog.identity import ProjectKey
from chatlog.orchestrator import Orchestrator
from chatlog.settings import Settings
from tests.helpers import eventually


@pytest.mark.parametrize("hook", ["after_register", "after_read", "random"])
async def test_a_start_between_registering_and_blocking_is_never_missed(
    orchestrator: Orchestrator, project: ProjectKey, hook: str
) -> None:
    iterations = 70 if hook != "random" else 60  # ~200 in all
    rng = random.Random(5)
    for _ in range(iterations):
        wid = (await orchestrator.create_workflow(project, start_timeout=30)).workflow_id

        async def start_now(wid: str = wid) -> None:
            await orchestrator.start_workflow(project, wid)

        if hook == "after_register":
            orchestrator._after_register = start_now
            started = None
        elif hook == "after_read":
            orchestrator._after_read = start_now
            started = None
        else:
            started = asyncio.create_task(_start_after(orchestrator, project, wid,
                                                       rng.random() * 0.004))
        try:
            event = await asyncio.wait_for(orchestrator.wait_for_start(project, wid), 10)
        finally:
            orchestrator._after_register = orchestrator._after_read = None
        if started is not None:
            await started
        assert event.type == "workflow.started" and event.aggregate_id == wid
    assert orchestrator.waiters == 0


async def _start_after(o: Orchestrator, project: ProjectKey, wid: str, delay: float) -> None:
    await asyncio.sleep(delay)  # jitter: the start lands anywhere around the wait's read
    await o.start_workflow(project, wid)


async def test_two_thousand_concurrent_waits_share_one_connection(
    valkey_factory: Callable[..., EmbeddedValkey], key_prefix: str, tmp_path: Any,
    project: ProjectKey,
) -> None:
    server = valkey_factory()
    store = await EventStore.open(server.url, prefix=key_prefix)
    settings = Settings(redis_url=server.url, key_prefix=key_prefix, data_dir=tmp_path)
    orchestrator = Orchestrator(store, settings)
    admin = aioredis.from_url(server.url)
    try:
        await orchestrator.start()
        n = 2000
        # odd ones get their start; even ones time out at their (short) deadline
        views = await asyncio.gather(*(
            orchestrator.create_workflow(project, workflow_id=f"wf-{i}",
                                         start_timeout=30 if i % 2 else 1.5)
            for i in range(n)
        ))
        assert len({v.workflow_id for v in views}) == n
        waits = [asyncio.create_task(orchestrator.wait_for_start(project, f"wf-{i}"))
                 for i in range(n)]
        await eventually(  # each wait has read its workflow and blocks (or timed out already)
            lambda: all(t.done() or orchestrator.blocked_on(project, f"wf-{i}")
                        for i, t in enumerate(waits)),
            timeout=30, what="every wait blocking")
        blocked = [c for c in await admin.client_list() if c.get("cmd") == "xread"]
        assert len(blocked) == 1  # one tailer serves every wait
        await asyncio.gather(*(orchestrator.start_workflow(project, f"wf-{i}")
                               for i in range(1, n, 2)))
        results = await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), 60)
        for i, r in enumerate(results):
            if i % 2:
                assert not isinstance(r, BaseException), r
                assert r.type == "workflow.started" and r.aggregate_id == f"wf-{i}"
            else:
                assert isinstance(r, WaitTimeout), r
                assert r.workflow_id == f"wf-{i}" and r.awaited == "start_task"
        states = await asyncio.gather(*(orchestrator.get_workflow(project, f"wf-{i}")
                                        for i in range(0, n, 97)))
        assert all(v.state == "failed" for v in states if int(v.workflow_id[3:]) % 2 == 0)
        assert orchestrator.waiters == 0 and orchestrator.open_waits == 0
    finally:
        await orchestrator.stop()
        await admin.aclose()
        await store.close()


async def test_restart_resumes_open_waits_and_fails_the_expired_ones(
    orchestrator_factory: Callable[..., Any], project: ProjectKey, store: EventStore,
) -> None:
    first: Orchestrator = await orchestrator_factory()
    made = await first.create_workflow(project, start_timeout=0.6)
    expires_while_down, deadline = made.workflow_id, made.deadline
    assert deadline is not None
    still_open = (await first.create_workflow(project, start_timeout=60)).workflow_id
    started_while_down = (await first.create_workflow(project, start_timeout=60)).workflow_id
    expires_after_restart = (await first.create_workflow(project, start_timeout=2.0)).workflow_id
    approval_open = (await first.create_workflow(project, start_timeout=60)).workflow_id
    await first.start_workflow(project, approval_open)
    await first.request_approval(project, approval_open, timeout=60)
    pending = asyncio.create_task(first.wait_for_start(project, still_open))
    await asyncio.wait_for(first.until_blocked(project, still_open), 10)
    await first.stop()  # the orchestrator goes down mid-wait
    with pytest.raises(OrchestratorStopped):
        await pending

    # while it is down: a deadline passes, a start and an approval are appended
    down: Orchestrator = await orchestrator_factory(start=False)
    await down.start_workflow(project, started_while_down)
    await down.decide_approval(project, approval_open, approved=True)
    await eventually(lambda: datetime.now(UTC) > deadline, what="the deadline passing")
    assert (await down.get_workflow(project, expires_while_down)).state == "waiting_for_start"

    second: Orchestrator = await orchestrator_factory()
    with pytest.raises(WaitTimeout):  # failed at once on restart
        await asyncio.wait_for(second.wait_for_start(project, expires_while_down), 10)
    expired = await second.get_workflow(project, expires_while_down)
    assert expired.state == "failed"
    assert expired.reason == "timed out after 0.6 s waiting for start_task"
    assert [h.type for h in expired.history] == [
        "workflow.created", "workflow.timed_out", "workflow.failed"]
    assert (await second.wait_for_start(project, started_while_down)).type == "workflow.started"
    assert (await second.wait_for_approval(project, approval_open)).type == "workflow.approved"
    # the one with time left still waits, and gets its start
    assert (await second.get_workflow(project, still_open)).state == "waiting_for_start"
    waiting = asyncio.create_task(second.wait_for_start(project, still_open))
    await asyncio.wait_for(second.until_blocked(project, still_open), 10)
    await second.start_workflow(project, still_open)
    assert (await asyncio.wait_for(waiting, 10)).type == "workflow.started"
    # the one whose deadline comes after the restart is timed out by the durable timer alone
    view = await asyncio.wait_for(
        second.wait_for_state(project, expires_after_restart, "failed", 20), 25)
    assert view.reason == "timed out after 2 s waiting for start_task"
    for wid in (started_while_down, approval_open, still_open):
        events = await store.read_aggregate(project.key, "workflow", wid)
        assert not any(e.type == "workflow.timed_out" for e in events)


async def test_two_orchestrators_time_out_a_workflow_exactly_once(
    orchestrator_factory: Callable[..., Any], project: ProjectKey, store: EventStore,
    store_factory: Callable[..., Any],
) -> None:
    other_store = await store_factory()
    a: Orchestrator = await orchestrator_factory()
    b: Orchestrator = await orchestrator_factory(store_=other_store)
    ids = [(await a.create_workflow(project, start_timeout=0.3)).workflow_id for _ in range(20)]
    for wid in ids:
        await asyncio.wait_for(b.wait_for_state(project, wid, "failed", 10), 15)
    for wid in ids:
        events = await store.read_aggregate(project.key, "workflow", wid)
        assert [e.type for e in events] == [
            "workflow.created", "workflow.timed_out", "workflow.failed"]
        with pytest.raises(InvalidTransition, match="it is failed"):
            await a.start_workflow(project, wid)


async def test_waits_and_timeouts_work_across_partitions(
    store_factory: Callable[..., Any], settings: Settings,
) -> None:
    from chatlog.identity import normalize_project_id

    store = await store_factory(partitions=3)
    orchestrator = Orchestrator(store, settings.model_copy(update={"partitions": 3}))
    await orchestrator.start()
    try:
        projects = [normalize_project_id(f"project-{i}") for i in range(6)]
        assert len({store.partition_of(p.key) for p in projects}) > 1
        ids = [(p, (await orchestrator.create_workflow(p, start_timeout=0.4)).workflow_id)
               for p in projects]
        started = [(p, (await orchestrator.create_workflow(p, start_timeout=30)).workflow_id)
                   for p in projects]
        waits = [asyncio.create_task(orchestrator.wait_for_start(p, w)) for p, w in started]
        for p, w in started:
            await asyncio.wait_for(orchestrator.until_blocked(p, w), 10)
        for p, w in started:
            await orchestrator.start_workflow(p, w)
        assert all(e.type == "workflow.started"
                   for e in await asyncio.wait_for(asyncio.gather(*waits), 10))
        for p, w in ids:
            view = await asyncio.wait_for(orchestrator.wait_for_state(p, w, "failed", 10), 15)
            assert view.reason == "timed out after 0.4 s waiting for start_task"
    finally:
        await orchestrator.stop()


async def test_waits_and_deadlines_survive_a_valkey_restart(
    valkey_factory: Callable[..., EmbeddedValkey], key_prefix: str, tmp_path: Any,
    project: ProjectKey,
) -> None:
    server = valkey_factory()
    store = await EventStore.open(server.url, prefix=key_prefix)
    settings = Settings(redis_url=server.url, key_prefix=key_prefix, data_dir=tmp_path)
    orchestrator = Orchestrator(store, settings)
    try:
        await orchestrator.start()
        made = await orchestrator.create_workflow(project, start_timeout=1.0)
        expiring, deadline = made.workflow_id, made.deadline
        assert deadline is not None
        waiting = (await orchestrator.create_workflow(project, start_timeout=60)).workflow_id
        pending = asyncio.create_task(orchestrator.wait_for_start(project, waiting))
        await asyncio.wait_for(orchestrator.until_blocked(project, waiting), 10)
        server.kill()  # the deadline passes while Valkey is down
        await eventually(lambda: datetime.now(UTC) > deadline, what="the deadline passing")
        server.start()
        view = await asyncio.wait_for(
            orchestrator.wait_for_state(project, expiring, "failed", 20), 25)
        assert view.reason == "timed out after 1 s waiting for start_task"
        assert [h.type for h in view.history] == [
            "workflow.created", "workflow.timed_out", "workflow.failed"]
        await orchestrator.start_workflow(project, waiting)
        assert (await asyncio.wait_for(pending, 20)).type == "workflow.started"
    finally:
        await orchestrator.stop()
        await store.close()


async def test_a_start_cancelled_during_catch_up_leaves_nothing_running(
    orchestrator_factory: Callable[..., Any], project: ProjectKey,
) -> None:
    o: Orchestrator = await orchestrator_factory(start=False)
    wid = (await o.create_workflow(project, start_timeout=0.3)).workflow_id
    starting = asyncio.create_task(o.start())
    await asyncio.sleep(0)  # one scheduling step: start() runs to its first await, no timing
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    alive = [t for t in asyncio.all_tasks() if t.get_name().startswith("orchestrator-")]
    assert alive == [] or all(t.done() for t in alive)
    with pytest.raises(OrchestratorStopped):
        await o.wait_for_start(project, wid)
    await o.start()  # and it can start again
    with pytest.raises(WaitTimeout):
        await asyncio.wait_for(o.wait_for_start(project, wid), 10)


async def test_cancelled_waits_end_and_unregister_whenever_the_cancel_lands(
    orchestrator: Orchestrator, project: ProjectKey,
) -> None:
    # redis-py may finish a command whose task was cancelled; the wait must still end
    wid = (await orchestrator.create_workflow(project, start_timeout=60)).workflow_id
    for i in range(60):
        task = asyncio.create_task(orchestrator.wait_for_start(project, wid))
        await asyncio.sleep(0.0001 * (i % 12))  # jitter: the cancel lands at every step
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=10)
        assert done == {task} and task.cancelled()
    assert orchestrator.waiters == 0
    assert (await orchestrator.get_workflow(project, wid)).state == "waiting_for_start"


async def test_the_waiter_registry_says_when_a_wait_blocks(
    orchestrator: Orchestrator, project: ProjectKey,
) -> None:
    wid = (await orchestrator.create_workflow(project, start_timeout=60)).workflow_id
    assert orchestrator.blocked_on(project, wid) == 0
    waits = [asyncio.create_task(orchestrator.wait_for_start(project, wid)) for _ in range(3)]
    await asyncio.wait_for(orchestrator.until_blocked(project, wid, count=3), 10)
    assert orchestrator.blocked_on(project, wid) == 3
    assert not any(w.done() for w in waits)  # blocked: the start has not been appended
    await orchestrator.start_workflow(project, wid)
    for event in await asyncio.wait_for(asyncio.gather(*waits), 10):
        assert event.type == "workflow.started"
    assert orchestrator.blocked_on(project, wid) == 0 and orchestrator.waiters == 0
