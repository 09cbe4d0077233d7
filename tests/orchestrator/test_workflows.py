"""Workflow commands: transitions as events, 409s naming the state, races with one winner,
and the seed's Test 1 (a workflow that never gets start_task fails with a clear reason)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from chatlog.errors import InvalidInput, InvalidTransition, NotFound, WaitTimeout
from chatlog.eventstore import EventStore
from chatlog.identity import ProjectKey, normalize_project_id
from chatlog.orchestrator import Orchestrator
from tests.helpers import eventually


def _types(view: Any) -> list[str]:
    return [h.type for h in view.history]


async def test_a_workflow_runs_through_approval_to_completion(
    orchestrator: Orchestrator, project: ProjectKey
) -> None:
    view = await orchestrator.create_workflow(project, name="blog post", input={"topic": "x"},
                                              start_timeout=30)
    assert view.state == "waiting_for_start" and view.awaiting == "start_task"
    assert view.deadline is not None and view.version == 1
    wid = view.workflow_id
    assert (await orchestrator.start_workflow(project, wid)).state == "running"
    asked = await orchestrator.request_approval(project, wid, prompt="publish?", timeout=30)
    assert asked.state == "awaiting_approval" and asked.awaiting == "approval"
    decided = await orchestrator.decide_approval(project, wid, approved=True, comment="ok")
    assert decided.state == "approved" and decided.deadline is None
    done = await orchestrator.complete(project, wid, result={"url": "/p/1"})
    assert done.state == "completed" and done.result == {"url": "/p/1"}
    again = await orchestrator.get_workflow(normalize_project_id("BLOG-PROJECT"), wid)
    assert again == done
    assert _types(again) == ["workflow.created", "workflow.started",
                             "workflow.approval_requested", "workflow.approved",
                             "workflow.completed"]
    assert [h.version for h in again.history] == [1, 2, 3, 4, 5]


async def test_invalid_transitions_name_the_current_state(
    orchestrator: Orchestrator, project: ProjectKey
) -> None:
    wid = (await orchestrator.create_workflow(project, start_timeout=30)).workflow_id
    with pytest.raises(InvalidTransition, match="it is waiting_for_start") as err:
        await orchestrator.decide_approval(project, wid, approved=True)
    assert err.value.status == 409 and err.value.state == "waiting_for_start"
    await orchestrator.start_workflow(project, wid)
    with pytest.raises(InvalidTransition, match=f"cannot start workflow {wid}: it is running"):
        await orchestrator.start_workflow(project, wid)
    with pytest.raises(InvalidTransition, match="it is running"):
        await orchestrator.create_workflow(project, workflow_id=wid)
    await orchestrator.cancel(project, wid, reason="no longer needed")
    with pytest.raises(InvalidTransition, match="it is cancelled"):
        await orchestrator.complete(project, wid)
    view = await orchestrator.get_workflow(project, wid)
    assert view.state == "cancelled" and view.reason == "no longer needed"
    assert view.version == 3  # the refused commands appended nothing


async def test_bad_input_and_missing_workflows(
    orchestrator: Orchestrator, project: ProjectKey
) -> None:
    with pytest.raises(NotFound):
        await orchestrator.get_workflow(project, "wf-missing")
    with pytest.raises(NotFound):
        await orchestrator.start_workflow(project, "wf-missing")
    for bad in ("", "a/b", " x", "x" * 201, "tab\there"):
        with pytest.raises(InvalidInput):
            await orchestrator.create_workflow(project, workflow_id=bad)
    with pytest.raises(InvalidInput):
        await orchestrator.create_workflow(project, start_timeout=0)
    with pytest.raises(InvalidInput):
        await orchestrator.wait_for_state(project, "wf-x", "flying", 1)
    with pytest.raises(InvalidInput, match="JSON objects"):
        await orchestrator.create_workflow(project, input={"x": object()})
    with pytest.raises(InvalidInput, match="JSON objects"):
        await orchestrator.create_workflow(project, input="text")  # type: ignore[arg-type]
    wid = (await orchestrator.create_workflow(project, start_timeout=30)).workflow_id
    with pytest.raises(InvalidInput):
        await orchestrator.fail(project, wid, reason=" ")
    await orchestrator.start_workflow(project, wid)
    with pytest.raises(InvalidInput):
        await orchestrator.enqueue_job(project, wid, kind="k", payload={"f": object()})
    with pytest.raises(InvalidInput):
        await orchestrator.complete(project, wid, result={"f": object()})
    assert (await orchestrator.get_workflow(project, wid)).version == 2  # nothing half-written


async def test_two_racing_approvals_exactly_one_wins(
    orchestrator: Orchestrator, project: ProjectKey, store: EventStore
) -> None:
    for _ in range(10):
        wid = (await orchestrator.create_workflow(project, start_timeout=30)).workflow_id
        await orchestrator.start_workflow(project, wid)
        await orchestrator.request_approval(project, wid, timeout=30)
        results = await asyncio.gather(
            orchestrator.decide_approval(project, wid, approved=True),
            orchestrator.decide_approval(project, wid, approved=False),
            return_exceptions=True,
        )
        wins = [r for r in results if not isinstance(r, BaseException)]
        losses = [r for r in results if isinstance(r, InvalidTransition)]
        assert len(wins) == 1 and len(losses) == 1
        assert losses[0].state == wins[0].state  # the loser names the state the winner left
        events = await store.read_aggregate(project.key, "workflow", wid)
        decisions = [e for e in events if e.type in ("workflow.approved", "workflow.rejected")]
        assert len(decisions) == 1


async def test_seed_test_1_no_start_task_times_out_then_fails(
    orchestrator_factory: Callable[..., Any], project: ProjectKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    orchestrator: Orchestrator = await orchestrator_factory(start_timeout=0.5)
    caplog.set_level(logging.WARNING, logger="chatlog.orchestrator")
    wid = (await orchestrator.create_workflow(project, name="start task")).workflow_id
    with pytest.raises(WaitTimeout) as err:
        await asyncio.wait_for(orchestrator.wait_for_start(project, wid), 20)
    assert err.value.workflow_id == wid and err.value.awaited == "start_task"
    assert err.value.waited >= 0.5
    assert f"workflow {wid}: timed out after" in str(err.value)
    assert "waiting for start_task" in str(err.value)
    view = await orchestrator.get_workflow(project, wid)
    reason = "timed out after 0.5 s waiting for start_task"
    assert view.state == "failed" and view.reason == reason
    assert _types(view) == ["workflow.created", "workflow.timed_out", "workflow.failed"]
    assert view.history[1].data["reason"] == reason and view.history[1].data["awaited"] == (
        "start_task")
    assert view.history[2].data == {"reason": reason}
    assert any(wid in r.getMessage() and reason in r.getMessage() for r in caplog.records)
    # a late start_task is refused, naming the state
    with pytest.raises(InvalidTransition, match="it is failed"):
        await orchestrator.start_workflow(project, wid)


async def test_approval_times_out_the_same_way(
    orchestrator: Orchestrator, project: ProjectKey
) -> None:
    wid = (await orchestrator.create_workflow(project, start_timeout=30)).workflow_id
    await orchestrator.start_workflow(project, wid)
    await orchestrator.request_approval(project, wid, prompt="ok?")  # 0.5 s (settings)
    with pytest.raises(WaitTimeout, match="waiting for approval"):
        await asyncio.wait_for(orchestrator.wait_for_approval(project, wid), 20)
    view = await orchestrator.get_workflow(project, wid)
    assert view.state == "failed"
    assert view.reason == "timed out after 0.5 s waiting for approval"
    with pytest.raises(InvalidTransition, match="it is failed"):
        await orchestrator.decide_approval(project, wid, approved=True)


async def test_a_command_after_the_deadline_loses_even_before_the_timer_fires(
    orchestrator_factory: Callable[..., Any], project: ProjectKey
) -> None:
    # not started: no timer at all; the deadline still wins over a late start
    orchestrator: Orchestrator = await orchestrator_factory(start=False)
    made = await orchestrator.create_workflow(project, start_timeout=0.3)
    wid, deadline = made.workflow_id, made.deadline
    assert deadline is not None
    await eventually(lambda: datetime.now(UTC) > deadline, what="the deadline passing")
    with pytest.raises(InvalidTransition, match="it is failed"):
        await orchestrator.start_workflow(project, wid)
    view = await orchestrator.get_workflow(project, wid)
    assert _types(view) == ["workflow.created", "workflow.timed_out", "workflow.failed"]


async def test_wait_for_start_returns_the_event_that_ended_the_wait(
    orchestrator: Orchestrator, project: ProjectKey
) -> None:
    wid = (await orchestrator.create_workflow(project, start_timeout=30)).workflow_id
    waiting = asyncio.create_task(orchestrator.wait_for_start(project, wid))
    await asyncio.wait_for(orchestrator.until_blocked(project, wid), 10)
    started = await orchestrator.start_workflow(project, wid, input={"go": 1})
    event = await asyncio.wait_for(waiting, 20)
    assert event.type == "workflow.started" and event.version == 2
    assert event.position == started.position
    # waiting again after the fact answers at once with the same event
    assert (await orchestrator.wait_for_start(project, wid)).id == event.id
    with pytest.raises(InvalidTransition, match="wait for approval"):
        await orchestrator.wait_for_approval(project, wid)
    cancelled = (await orchestrator.create_workflow(project, start_timeout=30)).workflow_id
    await orchestrator.cancel(project, cancelled, reason="user left")
    assert (await orchestrator.wait_for_start(project, cancelled)).type == "workflow.cancelled"


async def test_wait_for_state_long_polls_and_times_out(
    orchestrator: Orchestrator, project: ProjectKey
) -> None:
    wid = (await orchestrator.create_workflow(project, start_timeout=30)).workflow_id
    with pytest.raises(WaitTimeout, match="state running"):
        await orchestrator.wait_for_state(project, wid, "running", 0.2)
    with pytest.raises(WaitTimeout):
        await orchestrator.wait_for_state(project, wid, "running", 0)
    now = await orchestrator.wait_for_state(project, wid, "waiting_for_start", 0)
    assert now.state == "waiting_for_start"  # already there: no time needed
    poll = asyncio.create_task(
        orchestrator.wait_for_state(project, wid, {"awaiting_approval", "running"}, 20))
    await asyncio.wait_for(orchestrator.until_blocked(project, wid), 10)
    await orchestrator.start_workflow(project, wid)
    view = await poll
    assert view.state == "running" and view.version == 2
    # an ended workflow answers at once, whatever was asked for
    await orchestrator.cancel(project, wid)
    ended = await orchestrator.wait_for_state(project, wid, "completed", 20)
    assert ended.state == "cancelled"
    assert (await orchestrator.wait_for_state(project, wid, "cancelled", 0)).version == 3


async def test_the_orchestrator_follows_the_machine_for_random_command_sequences(
    orchestrator: Orchestrator, project: ProjectKey
) -> None:
    import random

    from chatlog.orchestrator.machine import TRANSITIONS, Command, State

    o = orchestrator
    calls = {
        Command.START: lambda w: o.start_workflow(project, w),
        Command.REQUEST_APPROVAL: lambda w: o.request_approval(project, w, timeout=60),
        Command.APPROVE: lambda w: o.decide_approval(project, w, approved=True),
        Command.REJECT: lambda w: o.decide_approval(project, w, approved=False),
        Command.COMPLETE: lambda w: o.complete(project, w),
        Command.FAIL: lambda w: o.fail(project, w, reason="r"),
        Command.CANCEL: lambda w: o.cancel(project, w),
        Command.ENQUEUE_JOB: lambda w: o.enqueue_job(project, w, kind="k"),
    }
    rng = random.Random(11)
    for _ in range(25):
        wid = (await o.create_workflow(project, start_timeout=60)).workflow_id
        state, version = State.WAITING_FOR_START, 1
        for _ in range(rng.randint(1, 8)):
            command = rng.choice(list(calls))
            target = TRANSITIONS.get((state, command))
            if target is None:
                with pytest.raises(InvalidTransition, match=f"it is {state.value}"):
                    await calls[command](wid)
            else:
                await calls[command](wid)
                state, version = target, version + 1
            view = await o.get_workflow(project, wid)
            assert (view.state, view.version) == (state.value, version)
