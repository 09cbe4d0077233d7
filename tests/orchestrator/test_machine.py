"""The workflow state machine: allowed transitions only, whatever the command sequence."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatlog.errors import InvalidTransition
from chatlog.events import AWAITED, TERMINAL, RecordedEvent
from chatlog.orchestrator.machine import (
    EVENT_OF,
    TRANSITIONS,
    Command,
    State,
    allowed_commands,
    decide,
    fold,
    reachable_states,
)

PROJECT = uuid.uuid4()


def _event(type_: str, version: int) -> RecordedEvent:
    data: dict[str, object] = {}
    if type_ == "workflow.created":
        data = {"start_timeout": 1.0, "deadline": (datetime.now(UTC) + timedelta(1)).isoformat()}
    elif type_ == "workflow.approval_requested":
        data = {"approval_timeout": 1.0,
                "deadline": (datetime.now(UTC) + timedelta(1)).isoformat()}
    elif type_ in ("workflow.failed", "workflow.timed_out"):
        data = {"reason": "r"}
    return RecordedEvent(
        id=uuid.uuid4(), type=type_, project=PROJECT, project_name="p",
        aggregate_type="workflow", aggregate_id="wf", version=version, partition=0,
        position=f"{version}-0", time=datetime.now(UTC), data=data,
    )


def _events_of(command: Command) -> list[str]:
    if command is Command.TIME_OUT:
        return ["workflow.timed_out", "workflow.failed"]  # one append, as the timer writes it
    return [EVENT_OF[command]]


@given(st.lists(st.sampled_from(list(Command)), max_size=40))
def test_no_command_sequence_leaves_the_allowed_states(commands: list[Command]) -> None:
    allowed = reachable_states()
    state = State.CREATED
    events: list[RecordedEvent] = []
    for command in commands:
        try:
            target = decide("wf", state, command)
        except InvalidTransition as exc:
            assert (state, command) not in TRANSITIONS
            assert exc.state == state.value and state.value in str(exc)
            continue
        assert (state, command) in TRANSITIONS
        for type_ in _events_of(command):
            events.append(_event(type_, len(events) + 1))
        state = State.FAILED if command is Command.TIME_OUT else target
        assert state in allowed
        # the fold of the log agrees with the machine, at every step
        folded = fold("wf", events)
        assert folded.state == state
        assert folded.version == len(events)
        assert (folded.awaiting is not None) == (state in AWAITED)
        assert (folded.deadline is not None) == (state in AWAITED)
    if state in TERMINAL:
        assert allowed_commands(state) == []


def test_terminal_states_allow_nothing_and_every_state_is_reachable() -> None:
    for s in TERMINAL:
        assert allowed_commands(s) == []
    assert reachable_states() == set(State)
    assert allowed_commands(State.TIMED_OUT) == [Command.FAIL]


@pytest.mark.parametrize(
    ("state", "command"),
    [(State.RUNNING, Command.APPROVE), (State.RUNNING, Command.START),
     (State.COMPLETED, Command.CANCEL), (State.WAITING_FOR_START, Command.REQUEST_APPROVAL)],
)
def test_invalid_commands_name_the_state(state: State, command: Command) -> None:
    with pytest.raises(InvalidTransition, match=f"it is {state.value}") as err:
        decide("wf-1", state, command)
    assert err.value.status == 409
    assert "wf-1" in str(err.value)


def test_job_events_and_unknown_types_leave_the_state_alone() -> None:
    events = [_event("workflow.created", 1), _event("workflow.started", 2),
              _event("job.enqueued", 3), _event("something.new", 4)]
    state = fold("wf", events)
    assert state.state is State.RUNNING
    assert state.version == 4
    assert [e.type for e in state.history][-2:] == ["job.enqueued", "something.new"]


async def test_a_waiter_fed_several_events_before_it_began_resolves_once() -> None:
    from chatlog.orchestrator._waits import Waiter

    events = [_event("workflow.created", 1), _event("workflow.timed_out", 2),
              _event("workflow.failed", 3)]
    waiter = Waiter(lambda s: s.state is not State.WAITING_FOR_START)
    for e in events:  # the tailer delivers them before the wait's read returns
        waiter.feed(e)
    assert waiter.begin(fold("wf", events[:1])) is True
    ended = await waiter.future
    assert ended is not None and ended.type == "workflow.timed_out"
