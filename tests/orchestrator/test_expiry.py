"""What a timed-out wait says it waited: measured from when its deadline was set."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from chatlog.events import aggregate_key
from chatlog.eventstore import EventStore
from chatlog.identity import ProjectKey
from chatlog.orchestrator import Orchestrator
from chatlog.orchestrator._timers import OpenWait


async def test_a_wait_opened_by_a_server_clock_ahead_says_how_long_it_really_waited(
    orchestrator_factory: Callable[..., Any], store: EventStore, project: ProjectKey,
) -> None:
    """The deadline is the caller's clock + the timeout; the opening event's time is the
    server's, later. Measured from the event, a wait that timed out exactly at its
    deadline said it waited less than its timeout (seed test 1 saw 0.497 s of 0.5 s)."""
    o: Orchestrator = await orchestrator_factory(start=False)
    await o.create_workflow(project, workflow_id="wf-clock", start_timeout=30)
    created = (await store.read_aggregate(project.key, "workflow", "wf-clock"))[0]
    deadline = datetime.fromisoformat(created.data["deadline"])
    wait = OpenWait(
        key=aggregate_key(project.key, "workflow", "wf-clock"), project=project.key,
        project_name=project.display, workflow_id="wf-clock", awaited="start_task",
        deadline=deadline, timeout=30.0,
        # the server's clock 10 s ahead of the caller's when it appended the event
        since=deadline - timedelta(seconds=20), version=created.version,
    )
    assert await o._expire(wait)
    timed_out = (await store.read_aggregate(project.key, "workflow", "wf-clock"))[1]
    assert timed_out.type == "workflow.timed_out"
    assert 0 <= timed_out.data["waited"] < 10  # from when the deadline was set, not -10 s
