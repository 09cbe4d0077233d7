"""The workflow state machine as pure code: states, commands, transitions, and the fold.

No I/O here. The orchestrator decides a command against the folded state,
turns it into events, and appends them with ``expected_version``; the fold
turns a workflow's events back into its state. Job events belong to the
workflow's aggregate (they show in its history) but never change its state.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson

from chatlog.big_events import data_of
from chatlog.errors import InvalidTransition
from chatlog.events import (
    AWAITED,
    STATE_AFTER,
    ApprovalRequested,
    EventData,
    JobEnqueued,
    NewEvent,
    RecordedEvent,
    State,
    WorkflowApproved,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowCreated,
    WorkflowFailed,
    WorkflowRejected,
    WorkflowStarted,
    WorkflowTimedOut,
)
from chatlog.identity import ProjectKey, random_uuid

#: The timeout field of the event that opens each kind of wait.
TIMEOUT_FIELDS = ("start_timeout", "approval_timeout", "run_timeout")


def wait_timeout(data: dict[str, Any]) -> float | None:
    """The timeout (seconds) recorded in the event that opened a wait."""
    for name in TIMEOUT_FIELDS:
        value = data.get(name)
        if isinstance(value, (int, float)):
            return float(value)
    return None


class Command(StrEnum):
    """What a caller (or the durable timer) asks a workflow to do."""

    CREATE = "create"
    START = "start"
    REQUEST_APPROVAL = "request_approval"
    APPROVE = "approve"
    REJECT = "reject"
    COMPLETE = "complete"
    FAIL = "fail"
    CANCEL = "cancel"
    TIME_OUT = "time_out"
    ENQUEUE_JOB = "enqueue_job"


S, C = State, Command
_ENDINGS = {C.FAIL: S.FAILED, C.CANCEL: S.CANCELLED}

#: ``(state, command) -> next state``: every transition the machine allows.
TRANSITIONS: dict[tuple[State, Command], State] = {
    (S.CREATED, C.CREATE): S.WAITING_FOR_START,
    (S.WAITING_FOR_START, C.START): S.RUNNING,
    (S.WAITING_FOR_START, C.TIME_OUT): S.TIMED_OUT,
    (S.RUNNING, C.REQUEST_APPROVAL): S.AWAITING_APPROVAL,
    (S.RUNNING, C.COMPLETE): S.COMPLETED,
    (S.AWAITING_APPROVAL, C.APPROVE): S.APPROVED,
    (S.AWAITING_APPROVAL, C.REJECT): S.REJECTED,
    (S.AWAITING_APPROVAL, C.TIME_OUT): S.TIMED_OUT,
    (S.APPROVED, C.REQUEST_APPROVAL): S.AWAITING_APPROVAL,
    (S.APPROVED, C.COMPLETE): S.COMPLETED,
    (S.REJECTED, C.REQUEST_APPROVAL): S.AWAITING_APPROVAL,
    (S.REJECTED, C.COMPLETE): S.COMPLETED,
    (S.TIMED_OUT, C.FAIL): S.FAILED,
    # With a run timeout (off by default) the running states have a deadline too.
    (S.RUNNING, C.TIME_OUT): S.TIMED_OUT,
    (S.APPROVED, C.TIME_OUT): S.TIMED_OUT,
    (S.REJECTED, C.TIME_OUT): S.TIMED_OUT,
}
for _s in (S.WAITING_FOR_START, S.RUNNING, S.AWAITING_APPROVAL, S.APPROVED, S.REJECTED):
    for _c, _target in _ENDINGS.items():
        TRANSITIONS[(_s, _c)] = _target
    TRANSITIONS[(_s, C.ENQUEUE_JOB)] = _s  # jobs run beside the workflow; state unchanged

#: The event type each state-changing command appends.
EVENT_OF: dict[Command, str] = {
    C.CREATE: WorkflowCreated.event_type,
    C.START: WorkflowStarted.event_type,
    C.REQUEST_APPROVAL: ApprovalRequested.event_type,
    C.APPROVE: WorkflowApproved.event_type,
    C.REJECT: WorkflowRejected.event_type,
    C.COMPLETE: WorkflowCompleted.event_type,
    C.FAIL: WorkflowFailed.event_type,
    C.CANCEL: WorkflowCancelled.event_type,
    C.TIME_OUT: WorkflowTimedOut.event_type,
    C.ENQUEUE_JOB: JobEnqueued.event_type,
}


def workflow_event(
    project: ProjectKey, workflow_id: str, data: EventData, event_id: uuid.UUID | None = None
) -> NewEvent:
    """An event of the workflow ``workflow_id`` (its commands and its jobs' events)."""
    # Not NewEvent.of: a big field built as an orjson.Fragment stays one (issue 15 #9).
    return NewEvent(
        id=event_id or random_uuid(),
        id_supplied=event_id is not None,
        type=data.event_type,
        project=project.key,
        project_name=project.display,
        aggregate_type="workflow",
        aggregate_id=workflow_id,
        data=data_of(data),
    )


def _words(command: Command) -> str:
    return command.value.replace("_", " ")


def decide(workflow_id: str, state: State, command: Command) -> State:
    """The state ``command`` leads to from ``state``.

    Raises :class:`InvalidTransition` (HTTP 409) naming the current state when
    the command does not apply.
    """
    target = TRANSITIONS.get((state, command))
    if target is None:
        raise InvalidTransition(workflow_id, _words(command), state.value)
    return target


def allowed_commands(state: State) -> list[Command]:
    """The commands that apply in ``state``."""
    return [c for (s, c) in TRANSITIONS if s == state]


def reachable_states() -> set[State]:
    """Every state reachable from ``created`` through :data:`TRANSITIONS`."""
    seen = {S.CREATED}
    frontier = [S.CREATED]
    while frontier:
        s = frontier.pop()
        for (src, _), dst in TRANSITIONS.items():
            if src == s and dst not in seen:
                seen.add(dst)
                frontier.append(dst)
    return seen


@dataclass(slots=True)
class WorkflowState:
    """A workflow folded from its events."""

    id: str
    project_name: str = ""
    name: str = ""
    state: State = S.CREATED
    #: When the current wait ends (only while waiting for start or approval).
    deadline: datetime | None = None
    #: What the current wait awaits: ``start_task`` or ``approval``.
    awaiting: str | None = None
    #: The configured timeout of the current wait, in seconds.
    timeout: float | None = None
    #: When the current wait began (the time of the event that opened it).
    wait_since: datetime | None = None
    version: int = 0
    position: str | None = None
    #: The time of its first and of its latest event.
    created_at: datetime | None = None
    updated_at: datetime | None = None
    #: Jobs enqueued for it.
    jobs: int = 0
    input: dict[str, Any] = field(default_factory=dict)
    #: The start's input, when it or the created input is big (an ``orjson.Fragment``):
    #: :attr:`input` updated by it is merged off the event loop, when the view is built.
    input_update: Any = None
    result: dict[str, Any] | None = None
    reason: str | None = None
    #: Seconds it may run before it times out (from ``workflow.created``); None: no limit.
    run_timeout: float | None = None
    history: list[RecordedEvent] = field(default_factory=list)

    def apply(self, event: RecordedEvent) -> None:
        """Fold one more event (the next version) into this state."""
        self.version = event.version
        self.position = event.position
        if self.created_at is None:
            self.created_at = event.time
        self.updated_at = event.time
        if event.type == JobEnqueued.event_type:
            self.jobs += 1
        self.history.append(event)
        if not self.project_name:
            self.project_name = event.project_name
        data = event.data
        target = STATE_AFTER.get(event.type)
        if target is None:
            return  # job events and unknown types leave the state alone
        self.state = target
        if event.type == WorkflowCreated.event_type:
            self.name = str(data.get("name", ""))
            given: Any = data.get("input")
            # A big input built as an orjson.Fragment stays one (only a state folded
            # from the log, whose input is a dict, is ever started and merged).
            self.input = given if isinstance(given, orjson.Fragment) else dict(given or {})  # type: ignore[assignment]
            self.run_timeout = data.get("run_timeout")
        elif event.type == WorkflowStarted.event_type and data.get("input"):
            started: Any = data["input"]
            if isinstance(started, orjson.Fragment) or isinstance(self.input, orjson.Fragment):
                self.input_update = started  # merged in the worker process (big_events.merged)
            else:
                self.input = {**self.input, **started}
        elif event.type == WorkflowCompleted.event_type:
            done: Any = data.get("result")
            self.result = done if isinstance(done, orjson.Fragment) else dict(done or {})  # type: ignore[assignment]
        elif "reason" in data:
            self.reason = str(data.get("reason", "")) or self.reason
        raw = data.get("deadline")
        if target in AWAITED and raw is not None:
            self.awaiting = AWAITED[target]
            self.deadline = datetime.fromisoformat(raw) if isinstance(raw, str) else raw
            self.timeout = wait_timeout(data)
            self.wait_since = event.time
        else:
            self.awaiting = None
            self.deadline = None
            self.timeout = None
            self.wait_since = None


def fold(workflow_id: str, events: list[RecordedEvent]) -> WorkflowState:
    """The state of a workflow after ``events`` (its events, in version order)."""
    state = WorkflowState(id=workflow_id)
    for event in events:
        state.apply(event)
    return state


def wait_outcome(state: WorkflowState, opened_by: str) -> RecordedEvent | None:
    """The event that ended the latest wait opened by an event of type ``opened_by``.

    ``None`` while that wait is still open (or was never opened).
    """
    opened = None
    for i in range(len(state.history) - 1, -1, -1):
        if state.history[i].type == opened_by:
            opened = i
            break
    if opened is None:
        return None
    for event in state.history[opened + 1 :]:
        if event.type in STATE_AFTER:
            return event
    return None
