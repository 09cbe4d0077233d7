"""The orchestrator: workflow commands, waits with deadlines, and the durable timer.

Every transition is an event appended with ``expected_version``, so of two
racing commands exactly one wins; the loser re-reads and either retries (the
version moved for a job event only) or gets :class:`InvalidTransition` naming
the state the winner left. Deadlines are in the log (``workflow.created`` and
``workflow.approval_requested`` carry them); the durable timer learns them by
tailing the log, so after a restart it resumes every open wait with the time
it has left and fails at once the ones already past.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError

from chatlog.errors import (
    ChatlogError,
    InvalidInput,
    InvalidTransition,
    NotFound,
    OrchestratorStopped,
    StoreUnavailable,
    VersionConflict,
    WaitTimeout,
)
from chatlog.events import (
    ApprovalRequested,
    EventData,
    JobEnqueued,
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
from chatlog.orchestrator import jobs as _jobs
from chatlog.orchestrator._cancel import raise_if_cancelling
from chatlog.orchestrator._timers import DeadlineTimers, OpenWait
from chatlog.orchestrator._waits import Dispatcher, Done, PartitionTailer, Waiter
from chatlog.orchestrator.machine import (
    AWAITED,
    TERMINAL,
    Command,
    State,
    WorkflowState,
    decide,
    fold,
    wait_outcome,
)
from chatlog.orchestrator.views import WorkflowView
from chatlog.settings import Settings

log = logging.getLogger("chatlog.orchestrator")

MAX_WORKFLOW_ID = 200
_RETRIES = 20
_EXPIRY_CONCURRENCY = 256
#: Reads in flight at once: each holds a pooled connection, and the pool is bounded.
_READ_CONCURRENCY = 32
#: How long stop() waits for its tasks to end.
_STOP_TIMEOUT = 5.0
#: Jobs enqueued longer ago than this (seconds) are not re-checked on catch-up.
_REQUEUE_HORIZON = 86_400.0
#: Jobs re-checked at once (each a small script call).
_REQUEUE_BATCH = 64


def _now() -> datetime:
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


class Orchestrator:
    """Workflows driven by events in the log, waits that never hang, jobs with leases.

    Commands (``create_workflow`` ... ``cancel``, ``enqueue_job``) and reads
    work without :meth:`start`; waits and the durable timer need it.
    """

    def __init__(self, store: EventStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._dispatcher = Dispatcher()
        self._timers = DeadlineTimers()
        self._tailers: list[PartitionTailer] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._expiries: set[asyncio.Task[None]] = set()
        self._expiry_slots = asyncio.Semaphore(_EXPIRY_CONCURRENCY)
        self._read_slots = asyncio.Semaphore(_READ_CONCURRENCY)
        self._requeue_pending: deque[RecordedEvent] = deque()
        self._requeue_ready = asyncio.Event()
        self._running = False
        self._jobs = _jobs.JobQueue(store, settings)
        # Test hooks: awaited right after a wait registers / right after it read the state.
        self._after_register: Callable[[], Awaitable[None]] | None = None
        self._after_read: Callable[[], Awaitable[None]] | None = None

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Start one tailer per partition and the durable timer.

        The tailers read the log from its start (decoding only workflow
        events), so the timer knows every open wait; it fires, after the
        catch-up, the waits whose deadline passed while nobody was running.
        Returns once the catch-up is done.
        """
        if self._running:
            return
        self._running = True
        loop = asyncio.get_running_loop()
        for p in range(self.store.partitions):
            tailer = PartitionTailer(self.store, p, self._on_events)
            self._tailers.append(tailer)
            self._tasks.append(loop.create_task(tailer.run(), name=f"orchestrator-tail-p{p}"))
        self._tasks.append(loop.create_task(self._run_timer(), name="orchestrator-timer"))
        self._tasks.append(loop.create_task(self._run_requeue(), name="orchestrator-requeue"))
        try:
            await self._caught_up()
        except BaseException:
            await self.stop()  # cancelled (or failed) while catching up: leave nothing running
            raise
        log.info("orchestrator: started; %d open waits recovered from the log",
                 len(self._timers.open))

    async def _caught_up(self) -> None:
        waits = [asyncio.ensure_future(t.caught_up.wait()) for t in self._tailers]
        try:
            await asyncio.wait([*waits, *self._tasks], return_when="FIRST_COMPLETED")
            while not all(w.done() for w in waits):
                for task in self._tasks:
                    if task.done():
                        task.result()  # a tailer or the timer died: surface why
                await asyncio.wait(
                    [*[w for w in waits if not w.done()], *self._tasks],
                    return_when="FIRST_COMPLETED",
                )
        finally:
            for w in waits:
                w.cancel()

    async def stop(self) -> None:
        """Stop the tailers and the timer; pending waits raise :class:`OrchestratorStopped`."""
        if not self._running:
            return
        self._running = False
        tasks = [*self._tasks, *self._expiries]
        for task in tasks:
            task.cancel()
        if tasks:
            done, stuck = await asyncio.wait(tasks, timeout=_STOP_TIMEOUT)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.warning("orchestrator: task %s had failed: %r",
                                task.get_name(), task.exception())
            for task in stuck:
                log.error("orchestrator: task %s did not stop within %g s",
                          task.get_name(), _STOP_TIMEOUT)
        self._tasks.clear()
        self._expiries.clear()
        self._tailers.clear()
        self._dispatcher.fail_all(OrchestratorStopped("the orchestrator stopped during the wait"))
        self._timers = DeadlineTimers()
        self._requeue_pending.clear()

    async def __aenter__(self) -> Orchestrator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def open_waits(self) -> int:
        """How many workflows wait for start or approval (as far as the tailers have read)."""
        return len(self._timers.open)

    @property
    def waiters(self) -> int:
        """How many callers are blocked in a wait right now."""
        return len(self._dispatcher)

    def _on_events(self, events: list[RecordedEvent]) -> None:
        for event in events:
            self._timers.observe(event)
            self._dispatcher.dispatch(event)
            if event.type == "job.enqueued":
                self._requeue_if_lost(event)

    def _requeue_if_lost(self, event: RecordedEvent) -> None:
        """Make sure an enqueued job is on its job stream (idempotent by job id).

        ``enqueue_job`` appends ``job.enqueued`` and then pushes the job; a
        crash or an outage between the two would leave a job in the history
        that no worker ever sees. Every orchestrator re-pushes the jobs it
        reads from the log (recent ones, on catch-up); the push does nothing
        for a job already queued, running, done or dead.
        """
        if (_now() - event.time).total_seconds() > _REQUEUE_HORIZON:
            return
        self._requeue_pending.append(event)
        self._requeue_ready.set()

    async def _run_requeue(self) -> None:
        while True:
            await self._requeue_ready.wait()
            self._requeue_ready.clear()
            pending = self._requeue_pending
            while pending:
                batch = [pending.popleft() for _ in range(min(_REQUEUE_BATCH, len(pending)))]
                await asyncio.gather(*(self._requeue(e) for e in batch))

    async def _requeue(self, event: RecordedEvent) -> None:
        project = ProjectKey(event.project, event.project_name)
        try:
            job = JobEnqueued.model_validate(event.data)
        except ValidationError:
            return
        delay = 0.2
        while True:
            try:
                await self._jobs.push(project, event.aggregate_id, job)
                raise_if_cancelling()
                return
            except StoreUnavailable as exc:
                raise_if_cancelling()
                log.warning("orchestrator: cannot check job %s yet (%s)", job.job_id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- the durable timer ------------------------------------------------------------

    async def _run_timer(self) -> None:
        for tailer in self._tailers:
            await tailer.caught_up.wait()
        timers_changed = self._timers.changed
        while True:
            timers = self._timers
            for wait in timers.due(time.time()):
                task = asyncio.get_running_loop().create_task(self._fire(wait))
                self._expiries.add(task)
                task.add_done_callback(self._expiries.discard)
            timers_changed = timers.changed
            timers_changed.clear()
            nxt = timers.next_deadline()
            delay = None if nxt is None else max(0.0, nxt - time.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await timers_changed.wait()

    async def _fire(self, wait: OpenWait) -> None:
        async with self._expiry_slots:
            try:
                await self._expire(wait)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("orchestrator: could not time out workflow %s (%s); retrying",
                            wait.workflow_id, exc)
                self._timers.retry(wait, time.time() + 1.0)

    async def _expire(self, wait: OpenWait) -> bool:
        """Append ``timed_out`` + ``failed`` if ``wait`` is still open; True if this call did.

        Both events go in one all-or-nothing append at the version the wait
        was seen at: a start, an approval or another node's expiry that came
        first makes it a no-op.
        """
        version = wait.version
        project = ProjectKey(wait.project, wait.project_name)
        for _ in range(_RETRIES):
            waited = round((_now() - wait.since).total_seconds(), 3)
            reason = timeout_reason(wait.timeout, wait.awaited)
            events = [
                WorkflowTimedOut(awaited=wait.awaited, waited=waited, reason=reason),
                WorkflowFailed(reason=reason),
            ]
            try:
                await self.store.append(
                    [_jobs.workflow_event(project, wait.workflow_id, d) for d in events],
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
            events = await self.store.read_aggregate(project.key, "workflow", workflow_id)
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
        return WorkflowView.of(project.key, await self._load(project, workflow_id))

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
                and state.deadline <= _now()
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
            return [_jobs.workflow_event(project, workflow_id, d) for d in build(state)]
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
            since=state.wait_since or _now(),
            version=state.version,
        )

    async def create_workflow(
        self,
        project: ProjectKey,
        *,
        name: str = "",
        input: dict[str, Any] | None = None,
        workflow_id: str | None = None,
        start_timeout: float | None = None,
    ) -> WorkflowView:
        """Create a workflow that waits for ``start_task`` until now + the start timeout.

        ``workflow_id`` defaults to ``wf-<uuid4>``; creating an id that exists
        is an :class:`InvalidTransition` naming its state. ``start_timeout``
        overrides ``settings.start_timeout`` for this workflow.
        """
        wid = workflow_id if workflow_id is not None else f"wf-{uuid.uuid4()}"
        timeout = _timeout(start_timeout, self.settings.start_timeout, "start_timeout")

        def build(_: WorkflowState) -> list[EventData]:
            return [
                WorkflowCreated(
                    name=name,
                    input=input or {},
                    start_timeout=timeout,
                    deadline=_now() + timedelta(seconds=timeout),
                )
            ]

        return self._view(project, await self._command(project, wid, Command.CREATE, build))

    async def start_workflow(
        self, project: ProjectKey, workflow_id: str, *, input: dict[str, Any] | None = None
    ) -> WorkflowView:
        """The ``start_task`` event: a workflow waiting for start runs."""
        state = await self._command(
            project, workflow_id, Command.START, lambda _: [WorkflowStarted(input=input or {})]
        )
        return self._view(project, state)

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
                    deadline=_now() + timedelta(seconds=seconds),
                )
            ]

        state = await self._command(project, workflow_id, Command.REQUEST_APPROVAL, build)
        return self._view(project, state)

    async def decide_approval(
        self, project: ProjectKey, workflow_id: str, *, approved: bool, comment: str = ""
    ) -> WorkflowView:
        """Approve or reject the pending approval request. Of two racing decisions one wins."""
        if approved:
            state = await self._command(
                project, workflow_id, Command.APPROVE,
                lambda _: [WorkflowApproved(comment=comment)],
            )
        else:
            state = await self._command(
                project, workflow_id, Command.REJECT,
                lambda _: [WorkflowRejected(comment=comment)],
            )
        return self._view(project, state)

    async def complete(
        self, project: ProjectKey, workflow_id: str, *, result: dict[str, Any] | None = None
    ) -> WorkflowView:
        state = await self._command(
            project, workflow_id, Command.COMPLETE,
            lambda _: [WorkflowCompleted(result=result or {})],
        )
        return self._view(project, state)

    async def fail(self, project: ProjectKey, workflow_id: str, *, reason: str) -> WorkflowView:
        if not reason.strip():
            raise InvalidInput("fail needs a reason (a non-empty string)")
        state = await self._command(
            project, workflow_id, Command.FAIL, lambda _: [WorkflowFailed(reason=reason)]
        )
        return self._view(project, state)

    async def cancel(
        self, project: ProjectKey, workflow_id: str, *, reason: str = ""
    ) -> WorkflowView:
        state = await self._command(
            project, workflow_id, Command.CANCEL, lambda _: [WorkflowCancelled(reason=reason)]
        )
        return self._view(project, state)

    def _view(self, project: ProjectKey, state: WorkflowState) -> WorkflowView:
        return WorkflowView.of(project.key, state)

    # -- waits ----------------------------------------------------------------------------------

    async def _wait(
        self, project: ProjectKey, workflow_id: str, done: Done, limit: float | None
    ) -> WorkflowState:
        """Block until ``done(state)``; the state then. ``TimeoutError`` after ``limit`` s."""
        check_workflow_id(workflow_id)
        if not self._running:
            raise OrchestratorStopped("the orchestrator is not started; call start() first")
        key = aggregate_key(project.key, "workflow", workflow_id)
        loop = asyncio.get_running_loop()
        deadline = None if limit is None else loop.time() + limit
        while True:
            waiter = Waiter(done)
            self._dispatcher.register(key, waiter)
            try:
                if self._after_register is not None:
                    await self._after_register()
                state = await self._load(project, workflow_id)
                if waiter.begin(state):
                    return state  # already there: answered even with no time left
                if self._after_read is not None:
                    await self._after_read()
                async with asyncio.timeout_at(deadline):
                    ended = await waiter.future
                if ended is not None:
                    return state  # waiter.state is state, folded forward
            finally:
                self._dispatcher.unregister(key, waiter)

    async def wait_for_state(
        self,
        project: ProjectKey,
        workflow_id: str,
        states: set[str] | str,
        timeout: float,  # noqa: ASYNC109 (part of the public API: the long-poll's length)
    ) -> WorkflowView:
        """Long-poll until the workflow is in one of ``states`` (or ended: it cannot get there).

        Raises :class:`WaitTimeout` after ``timeout`` seconds; nothing is appended.
        """
        wanted = {states} if isinstance(states, str) else set(states)
        known = {s.value for s in State}
        unknown = sorted(wanted - known)
        if unknown or not wanted:
            raise InvalidInput(
                f"unknown workflow state(s) {unknown or '(none given)'}; "
                f"states are {', '.join(sorted(known))}"
            )
        if timeout < 0:
            raise InvalidInput(f"timeout must be 0 or more seconds, not {timeout}")

        def done(state: WorkflowState) -> bool:
            return state.state.value in wanted or state.state in TERMINAL

        began = time.monotonic()
        try:
            state = await self._wait(project, workflow_id, done, timeout)
        except TimeoutError as exc:
            waited = round(time.monotonic() - began, 3)
            raise WaitTimeout(workflow_id, f"state {'|'.join(sorted(wanted))}", waited) from exc
        return self._view(project, state)

    async def wait_for_start(self, project: ProjectKey, workflow_id: str) -> RecordedEvent:
        """Wait until the workflow's wait for ``start_task`` ends; the event that ended it.

        That is ``workflow.started`` (or ``workflow.cancelled`` / ``failed`` if
        someone ended it first: check ``event.type``). When the deadline
        passes, the durable timer appends ``timed_out`` + ``failed`` and this
        raises :class:`WaitTimeout` naming the workflow, ``start_task`` and
        the time waited.
        """
        return await self._wait_for(project, workflow_id, "workflow.created", "start_task")

    async def wait_for_approval(self, project: ProjectKey, workflow_id: str) -> RecordedEvent:
        """Wait until the latest approval request is decided; the event that decided it.

        ``workflow.approved`` or ``workflow.rejected`` (or ``cancelled`` /
        ``failed``); :class:`WaitTimeout` when the approval deadline passed.
        :class:`InvalidTransition` if no approval was ever requested.
        """
        return await self._wait_for(
            project, workflow_id, "workflow.approval_requested", "approval"
        )

    async def _wait_for(
        self, project: ProjectKey, workflow_id: str, opened_by: str, awaited: str
    ) -> RecordedEvent:
        waiting = State.WAITING_FOR_START if awaited == "start_task" else State.AWAITING_APPROVAL

        def done(state: WorkflowState) -> bool:
            return state.state is not waiting

        state = await self._wait(project, workflow_id, done, None)
        ended = wait_outcome(state, opened_by)
        if ended is None:
            raise InvalidTransition(workflow_id, f"wait for {awaited}", state.state.value)
        if ended.type == "workflow.timed_out":
            raise WaitTimeout(workflow_id, awaited, float(ended.data.get("waited", 0.0)))
        return ended

    # -- jobs -------------------------------------------------------------------------------------

    async def enqueue_job(
        self,
        project: ProjectKey,
        workflow_id: str,
        *,
        kind: str,
        payload: dict[str, Any] | None = None,
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
        job = _jobs.new_job(
            kind, payload,
            max_deliveries if max_deliveries is not None else self.settings.job_max_deliveries,
            job_id,
        )
        await self._command(project, workflow_id, Command.ENQUEUE_JOB, lambda _: [job])
        await self._jobs.push(project, workflow_id, job)
        return job.job_id

    async def dead_letters(self, limit: int = 100) -> list[_jobs.DeadLetter]:
        """Jobs that used up their deliveries, oldest first, across partitions."""
        return await _jobs.list_dead_letters(self.store, limit=limit)


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


__all__ = ["Orchestrator", "WorkflowView", "check_workflow_id", "timeout_reason"]
