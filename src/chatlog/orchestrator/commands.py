"""Workflow commands: decide on the folded state, append the events at its version.

Every transition is an event appended with ``expected_version``, so of two
racing commands exactly one wins; the loser re-reads and either retries (the
version moved for a job event only) or gets :class:`InvalidTransition` naming
the state the winner left. A command on a wait whose deadline passed first
times it out: the deadline wins whether or not the timer got there.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pydantic import ValidationError
from pydantic_core import PydanticSerializationError

from chatlog import big_events
from chatlog.errors import (
    ChatlogError,
    InvalidInput,
    InvalidTransition,
    NotFound,
    VersionConflict,
)
from chatlog.events import (
    AWAITED,
    ApprovalRequested,
    EventData,
    NewEvent,
    RecordedEvent,
    WorkflowApproved,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowCreated,
    WorkflowFailed,
    WorkflowRejected,
    WorkflowStarted,
    WorkflowTimedOut,
    aggregate_key,
    position_time,
)
from chatlog.eventstore.store import AppendResult, EventStore
from chatlog.identity import ProjectKey
from chatlog.orchestrator._cancel import raise_if_cancelling
from chatlog.orchestrator._timers import OpenWait
from chatlog.orchestrator.job_admin import list_dead_letters
from chatlog.orchestrator.jobs import DeadLetter, JobQueue, new_job
from chatlog.orchestrator.machine import (
    Command,
    WorkflowState,
    decide,
    fold,
    workflow_event,
)
from chatlog.orchestrator.views import WorkflowView
from chatlog.settings import Settings

log = logging.getLogger("chatlog.orchestrator")

MAX_WORKFLOW_ID = 200
#: Re-reads after a version conflict before a command gives up ("busy").
_RETRIES = 20
#: Reads in flight at once: each holds a pooled connection, and the pool is bounded.
_READ_CONCURRENCY = 32


def utc_now() -> datetime:
    """Now, in UTC (deadlines and waits are measured against it)."""
    return datetime.now(UTC)


def timeout_reason(timeout: float, awaited: str) -> str:
    """The reason a timed-out wait records: ``timed out after 300 s waiting for start_task``."""
    return f"timed out after {timeout:g} s waiting for {awaited}"


def check_workflow_id(workflow_id: str) -> str:
    """A workflow id as given, or :class:`InvalidInput` saying what a valid one is."""
    if (
        not isinstance(workflow_id, str)
        or not workflow_id
        or len(workflow_id) > MAX_WORKFLOW_ID
        or "/" in workflow_id
        or not workflow_id.isprintable()
        or workflow_id != workflow_id.strip()
    ):
        raise InvalidInput(
            f"workflow id {workflow_id!r} is not valid: use 1 to {MAX_WORKFLOW_ID} printable "
            "characters without '/' or surrounding spaces"
        )
    return workflow_id


class WorkflowCommands:
    """The commands and reads of workflows; they need no running tailer or timer.

    :class:`~chatlog.orchestrator.Orchestrator` adds the waits and the durable timer.
    """

    def __init__(self, store: EventStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._read_slots = asyncio.Semaphore(_READ_CONCURRENCY)
        self._jobs = JobQueue(store, settings)

    # -- timing out -----------------------------------------------------------------------

    async def _expire(self, wait: OpenWait) -> bool:
        """Append ``timed_out`` + ``failed`` if ``wait`` is still open; True if this call did.

        Both events go in one all-or-nothing append at the version the wait
        was seen at: a start, an approval or another node's expiry that came
        first makes it a no-op.
        """
        version = wait.version
        project = ProjectKey(wait.project, wait.project_name)
        for _ in range(_RETRIES):
            # The wait began when its deadline was set, by the clock that set it; its
            # opening event's time is the server's, a little later (so a 0.5 s wait
            # that timed out at its deadline said it waited 0.497 s).
            began = wait.since
            if wait.timeout:
                began = min(began, wait.deadline - timedelta(seconds=wait.timeout))
            waited = round((utc_now() - began).total_seconds(), 3)
            reason = timeout_reason(wait.timeout, wait.awaited)
            events = [
                WorkflowTimedOut(awaited=wait.awaited, waited=waited, reason=reason),
                WorkflowFailed(reason=reason),
            ]
            try:
                await self.store.append(
                    [workflow_event(project, wait.workflow_id, d) for d in events],
                    expected_version=version,
                )
            except VersionConflict:
                state = await self._load(project, wait.workflow_id)
                if state.awaiting != wait.awaited or state.deadline != wait.deadline:
                    return False  # the wait ended (or another node expired it) first
                version = state.version
                continue
            log.warning(
                "orchestrator: workflow %s (project %s) %s; it is now failed",
                wait.workflow_id, wait.project_name or wait.project, reason,
            )
            return True
        return False

    # -- reading ------------------------------------------------------------------------

    async def _read(self, project: ProjectKey, workflow_id: str) -> list[RecordedEvent]:
        async with self._read_slots:
            # A big input, result or payload is split off in the worker process (issue 15).
            events = await self.store.read_aggregate(project.key, "workflow", workflow_id,
                                                     decode=big_events.decode)
        raise_if_cancelling()
        return events

    async def _load(self, project: ProjectKey, workflow_id: str) -> WorkflowState:
        events = await self._read(project, workflow_id)
        if not events:
            raise NotFound(f"workflow {workflow_id} does not exist in project {project.display!r}")
        return fold(workflow_id, events)

    async def get_workflow(self, project: ProjectKey, workflow_id: str) -> WorkflowView:
        """The workflow folded from its events; :class:`NotFound` if it has none."""
        check_workflow_id(workflow_id)
        return await self._view(project, await self._load(project, workflow_id))

    # -- commands ----------------------------------------------------------------------------

    async def _command(
        self,
        project: ProjectKey,
        workflow_id: str,
        command: Command,
        build: Callable[[WorkflowState], Sequence[EventData]],
    ) -> WorkflowState:
        """Decide ``command`` on the current state, append its events at that version.

        A command on a wait whose deadline has passed first times the wait
        out (the deadline wins, whether or not the timer got there), then
        fails as an invalid transition from ``failed``.
        """
        check_workflow_id(workflow_id)
        for _ in range(_RETRIES):
            if command is Command.CREATE:
                state = fold(workflow_id, await self._read(project, workflow_id))
            else:
                state = await self._load(project, workflow_id)
            if (
                state.state in AWAITED
                and state.deadline is not None
                and state.deadline <= utc_now()
            ):
                await self._expire(self._open_wait(project, state))
                continue
            decide(workflow_id, state.state, command)
            new = self._build(project, workflow_id, command, build, state)
            try:
                results = await self.store.append(new, expected_version=state.version)
            except VersionConflict:
                continue  # someone else moved it: re-read and decide again
            for event, result in zip(new, results, strict=True):
                state.apply(_recorded(event, result))
            return state
        raise InvalidTransition(workflow_id, command.value.replace("_", " "), "busy")

    def _build(
        self,
        project: ProjectKey,
        workflow_id: str,
        command: Command,
        build: Callable[[WorkflowState], Sequence[EventData]],
        state: WorkflowState,
    ) -> list[NewEvent]:
        """The command's events; :class:`InvalidInput` when its data cannot be stored."""
        try:
            return [workflow_event(project, workflow_id, d) for d in build(state)]
        except ChatlogError:
            raise
        except (ValidationError, PydanticSerializationError, TypeError, ValueError) as exc:
            detail = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            raise InvalidInput(
                f"cannot {command.value.replace('_', ' ')} workflow {workflow_id}: {detail} "
                "(input, result and payload must be JSON objects)"
            ) from exc

    def _open_wait(self, project: ProjectKey, state: WorkflowState) -> OpenWait:
        assert state.deadline is not None and state.awaiting is not None
        return OpenWait(
            key=aggregate_key(project.key, "workflow", state.id),
            project=project.key,
            project_name=state.project_name or project.display,
            workflow_id=state.id,
            awaited=state.awaiting,
            deadline=state.deadline,
            timeout=state.timeout or 0.0,
            since=state.wait_since or utc_now(),
            version=state.version,
        )

    async def create_workflow(
        self,
        project: ProjectKey,
        *,
        name: str = "",
        input: dict[str, Any] | orjson.Fragment | None = None,
        workflow_id: str | None = None,
        start_timeout: float | None = None,
        run_timeout: float | None = None,
    ) -> WorkflowView:
        """Create a workflow that waits for ``start_task`` until now + the start timeout.

        ``workflow_id`` defaults to ``wf-<uuid4>``; creating an id that exists
        is an :class:`InvalidTransition` naming its state. ``start_timeout``
        overrides ``settings.start_timeout`` for this workflow; ``run_timeout``
        (default ``settings.run_timeout``, off) bounds how long it may run.
        """
        wid = workflow_id if workflow_id is not None else f"wf-{uuid.uuid4()}"
        timeout = _timeout(start_timeout, self.settings.start_timeout, "start_timeout")
        run_for = (None if run_timeout is None and self.settings.run_timeout is None
                   else _timeout(run_timeout, self.settings.run_timeout or 0.0, "run_timeout"))

        make: Any = _maker(WorkflowCreated, input)

        def build(_: WorkflowState) -> list[EventData]:
            return [
                make(
                    name=name,
                    input=input or {},
                    start_timeout=timeout,
                    deadline=utc_now() + timedelta(seconds=timeout),
                    run_timeout=run_for,
                )
            ]

        state = await self._command(project, wid, Command.CREATE, build)
        return await self._view(project, state)

    async def start_workflow(
        self, project: ProjectKey, workflow_id: str, *,
        input: dict[str, Any] | orjson.Fragment | None = None,
    ) -> WorkflowView:
        """The ``start_task`` event: a workflow waiting for start runs (``input`` updates
        the created input; an ``orjson.Fragment`` is a big JSON object checked elsewhere)."""
        make: Any = _maker(WorkflowStarted, input)
        state = await self._command(
            project, workflow_id, Command.START,
            lambda s: [make(input=input or {}, **_run_deadline(s))],
        )
        return await self._view(project, state)

    async def request_approval(
        self,
        project: ProjectKey,
        workflow_id: str,
        *,
        prompt: str = "",
        timeout: float | None = None,  # noqa: ASYNC109 (the wait's length, not a call timeout)
    ) -> WorkflowView:
        """Ask for approval; it is awaited until now + the approval timeout (or ``timeout``)."""
        seconds = _timeout(timeout, self.settings.approval_timeout, "timeout")

        def build(_: WorkflowState) -> list[EventData]:
            return [
                ApprovalRequested(
                    prompt=prompt,
                    approval_timeout=seconds,
                    deadline=utc_now() + timedelta(seconds=seconds),
                )
            ]

        state = await self._command(project, workflow_id, Command.REQUEST_APPROVAL, build)
        return await self._view(project, state)

    async def decide_approval(
        self, project: ProjectKey, workflow_id: str, *, approved: bool, comment: str = ""
    ) -> WorkflowView:
        """Approve or reject the pending approval request. Of two racing decisions one wins."""
        if approved:
            state = await self._command(
                project, workflow_id, Command.APPROVE,
                lambda s: [WorkflowApproved(comment=comment, **_run_deadline(s))],
            )
        else:
            state = await self._command(
                project, workflow_id, Command.REJECT,
                lambda s: [WorkflowRejected(comment=comment, **_run_deadline(s))],
            )
        return await self._view(project, state)

    async def complete(
        self, project: ProjectKey, workflow_id: str, *,
        result: dict[str, Any] | orjson.Fragment | None = None,
    ) -> WorkflowView:
        make: Any = _maker(WorkflowCompleted, result)
        state = await self._command(
            project, workflow_id, Command.COMPLETE,
            lambda _: [make(result=result or {})],
        )
        return await self._view(project, state)

    async def fail(self, project: ProjectKey, workflow_id: str, *, reason: str) -> WorkflowView:
        if not reason.strip():
            raise InvalidInput("fail needs a reason (a non-empty string)")
        state = await self._command(
            project, workflow_id, Command.FAIL, lambda _: [WorkflowFailed(reason=reason)]
        )
        return await self._view(project, state)

    async def cancel(
        self, project: ProjectKey, workflow_id: str, *, reason: str = ""
    ) -> WorkflowView:
        state = await self._command(
            project, workflow_id, Command.CANCEL, lambda _: [WorkflowCancelled(reason=reason)]
        )
        return await self._view(project, state)

    async def _view(self, project: ProjectKey, state: WorkflowState) -> WorkflowView:
        return await WorkflowView.build(project.key, state)

    # -- jobs -------------------------------------------------------------------------------------

    async def enqueue_job(
        self,
        project: ProjectKey,
        workflow_id: str,
        *,
        kind: str,
        payload: dict[str, Any] | orjson.Fragment | None = None,
        job_id: str | None = None,
        max_deliveries: int | None = None,
    ) -> str:
        """Queue a job for a workflow that has not ended; its id.

        Appends ``job.enqueued`` to the workflow (in its history), then adds
        the job to the partition's job stream for :class:`~chatlog.orchestrator.Worker`.
        Should the second step fail, a running orchestrator adds it when it
        reads the event (the push is idempotent by job id). ``job_id``
        defaults to ``job-<uuid4>``; ``max_deliveries`` to the setting.
        """
        job = new_job(
            kind, payload,
            max_deliveries if max_deliveries is not None else self.settings.job_max_deliveries,
            job_id,
        )
        await self._command(project, workflow_id, Command.ENQUEUE_JOB, lambda _: [job])
        await self._jobs.push(project, workflow_id, job)
        return job.job_id

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Jobs that used up their deliveries, oldest first, across partitions."""
        return await list_dead_letters(self.store, limit=limit)


def _maker(event: type[EventData], value: Any) -> Any:
    """How to build ``event`` with ``value``: a Fragment (a big JSON object, checked in
    the worker process: issue 15 #9) goes in as it is, unvalidated."""
    return event.model_construct if isinstance(value, orjson.Fragment) else event


def _run_deadline(state: WorkflowState) -> dict[str, Any]:
    """The run timeout and deadline an event that (re)starts the run records, if any."""
    if state.run_timeout is None:
        return {}
    return {"run_timeout": state.run_timeout,
            "deadline": utc_now() + timedelta(seconds=state.run_timeout)}


def _timeout(given: float | None, default: float, name: str) -> float:
    if given is None:
        return default
    if not given > 0:
        raise InvalidInput(f"{name} must be a positive number of seconds, not {given}")
    return float(given)


def _recorded(event: NewEvent, result: AppendResult) -> RecordedEvent:
    """The event as the log recorded it, without reading it back."""
    return RecordedEvent.model_construct(
        id=event.id,
        type=event.type,
        project=event.project,
        project_name=event.project_name,
        aggregate_type=event.aggregate_type,
        aggregate_id=event.aggregate_id,
        version=result.version,
        partition=result.partition,
        position=result.position,
        time=position_time(result.position),
        data=event.data,
        schema_version=event.schema_version,
    )

