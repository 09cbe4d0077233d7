"""``Orchestrator.start(wait=False)``: the catch-up goes on while the caller serves.

``chatlog serve`` listens (and ``/readyz`` answers) without waiting for the
orchestrator to read the log after its restore point (on a fresh data dir, the
whole hot tail); waits registered meanwhile, and deadlines in the log it has not
read yet, behave as after a catch-up that finished first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from chatlog.eventstore import EventStore
from chatlog.identity import ProjectKey
from chatlog.orchestrator import Orchestrator
from tests.helpers import eventually, message


async def _fill(store: EventStore, n: int) -> None:
    for k in range(0, n, 500):  # concurrent appends: group-committed
        await asyncio.gather(*(store.append_one(message(content=f"m{i}"))
                               for i in range(k, min(n, k + 500))))


async def test_a_background_start_answers_waits_and_fires_deadlines_after_its_catch_up(
    orchestrator_factory: Callable[..., Any], store: EventStore, project: ProjectKey,
) -> None:
    writer: Orchestrator = await orchestrator_factory(start=False)  # commands need no start
    await writer.create_workflow(project, workflow_id="wf-late", start_timeout=0.05)
    await writer.create_workflow(project, workflow_id="wf-waits", start_timeout=60)
    await _fill(store, 3000)  # a log to catch up on: several of the tailer's pages

    orch: Orchestrator = await orchestrator_factory(start=False)
    await orch.start(wait=False)
    # Returned before its tailer ran at all: still catching up, nothing failed.
    assert orch.catching_up
    assert orch.problem is None

    started = asyncio.ensure_future(orch.wait_for_start(project, "wf-waits"))
    await asyncio.wait_for(orch.until_blocked(project, "wf-waits"), 30)
    await writer.start_workflow(project, "wf-waits")
    ended = await asyncio.wait_for(started, 30)
    assert ended.type == "workflow.started"

    async def late_failed() -> list[str]:
        types = [e.type for e in await store.read(0, limit=10_000)
                 if e.aggregate_id == "wf-late"]
        return types if types[-2:] == ["workflow.timed_out", "workflow.failed"] else []

    await eventually(late_failed, what="wf-late to time out once the catch-up read it")
    await eventually(lambda: not orch.catching_up, what="the catch-up to end")
    assert orch.problem is None


async def test_stop_during_a_background_start_leaves_nothing_running(
    orchestrator_factory: Callable[..., Any], store: EventStore,
) -> None:
    await _fill(store, 2000)
    orch: Orchestrator = await orchestrator_factory(start=False)
    await orch.start(wait=False)
    await orch.stop()
    assert not orch.catching_up  # no tailer left
    await orch.start(wait=False)  # and it starts again
    await eventually(lambda: not orch.catching_up, what="the second start's catch-up")
