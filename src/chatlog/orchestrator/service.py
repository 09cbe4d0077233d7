"""The orchestrator: workflow commands (:mod:`.commands`), waits with deadlines, the durable timer.

Deadlines are in the log (``workflow.created`` and
``workflow.approval_requested`` carry them); the durable timer learns them by
tailing the log, so after a restart it resumes every open wait with the time
it has left and fails at once the ones already past.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from chatlog.errors import (
    InvalidInput,
    InvalidTransition,
    OrchestratorStopped,
    StoreUnavailable,
    WaitTimeout,
)
from chatlog.events import (
    AWAITED,
    STATE_AFTER,
    TERMINAL,
    ApprovalRequested,
    JobEnqueued,
    RecordedEvent,
    State,
    WorkflowCreated,
    WorkflowTimedOut,
    aggregate_key,
)
from chatlog.eventstore.store import EventStore
from chatlog.identity import ProjectKey
from chatlog.orchestrator._cancel import raise_if_cancelling
from chatlog.orchestrator._recent_jobs import RecentJob, archived_recent_jobs
from chatlog.orchestrator._restore import StartPoint, read_snapshots, start_point
from chatlog.orchestrator._startup import until_caught_up
from chatlog.orchestrator._timers import DeadlineTimers, OpenWait
from chatlog.orchestrator._waits import Dispatcher, Done, PartitionTailer, Waiter
from chatlog.orchestrator.commands import (
    WorkflowCommands,
    check_workflow_id,
    timeout_reason,
    utc_now,
)
from chatlog.orchestrator.machine import TIMEOUT_FIELDS, WorkflowState, wait_outcome
from chatlog.orchestrator.views import WorkflowView
from chatlog.projections.workflows import OpenWaitRow, recent_jobs, restore_point
from chatlog.settings import Settings
from chatlog.tuning import settle_heap

log = logging.getLogger("chatlog.orchestrator")

_EXPIRY_CONCURRENCY = 256
#: How long stop() waits for its tasks to end.
_STOP_TIMEOUT = 5.0
#: Jobs enqueued longer ago than this (seconds) are not re-checked on catch-up.
_REQUEUE_HORIZON = 86_400.0
#: Jobs re-checked at once (each a small script call).
_REQUEUE_BATCH = 64


class Orchestrator(WorkflowCommands):
    """Workflows driven by events in the log, waits that never hang, jobs with leases.

    Commands (``create_workflow`` ... ``cancel``, ``enqueue_job``) and reads
    work without :meth:`start`; waits and the durable timer need it.
    """

    def __init__(self, store: EventStore, settings: Settings) -> None:
        super().__init__(store, settings)
        self._dispatcher = Dispatcher()
        self._timers = DeadlineTimers()
        self._tailers: list[PartitionTailer] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._expiries: set[asyncio.Task[None]] = set()
        self._expiry_slots = asyncio.Semaphore(_EXPIRY_CONCURRENCY)
        #: Jobs to re-check: (project, workflow id, the job.enqueued data).
        self._requeue_pending: deque[tuple[ProjectKey, str, Any]] = deque()
        self._restored_from = ""
        self._start: StartPoint | None = None
        self._requeue_ready = asyncio.Event()
        self._running = False
        self._catch_up: asyncio.Task[None] | None = None
        #: Why the last ``start(wait=False)`` failed (None: it did not).
        self.problem: str | None = None
        # Test hooks: awaited right after a wait registers / right after it read the state.
        self._after_register: Callable[[], Awaitable[None]] | None = None
        self._after_read: Callable[[], Awaitable[None]] | None = None

    # -- lifecycle ------------------------------------------------------------------

    async def start(self, *, wait: bool = True) -> None:
        """Start one tailer per partition and the durable timer.

        Start-up does not read history: the open waits and the position they
        hold at come from the workflows read model's checkpoint (see
        :meth:`_restore`); the tailers then read only the log after it
        (decoding only workflow events), so the timer knows every open wait.
        Without a read model they read the log from its start. After the
        catch-up the timer fires the waits whose deadline passed while nobody
        was running. Returns once the catch-up is done; with ``wait=False`` as
        soon as the tailers run (:attr:`catching_up` until they have caught up;
        waits meanwhile are answered once their tailer reaches the present, a
        failure is logged and kept in :attr:`problem`).
        """
        if self._running:
            return
        self._running = True
        self.problem = None
        loop = asyncio.get_running_loop()
        try:
            positions, restored = await self._restore()
        except BaseException:
            self._running = False
            raise
        for p in range(self.store.partitions):
            tailer = PartitionTailer(self.store, p, self._on_events, position=positions[p])
            self._tailers.append(tailer)
            self._tasks.append(loop.create_task(tailer.run(), name=f"orchestrator-tail-p{p}"))
        self._tasks.append(loop.create_task(self._run_timer(), name="orchestrator-timer"))
        self._tasks.append(loop.create_task(self._run_requeue(), name="orchestrator-requeue"))
        if not wait:
            self._catch_up = loop.create_task(self._caught_up(restored), name="orchestrator-start")
            return
        try:
            await self._caught_up(restored)
        except BaseException:
            await self.stop()  # cancelled (or failed) while catching up: leave nothing running
            raise

    @property
    def catching_up(self) -> bool:
        """Whether a tailer has not yet read up to the present since :meth:`start`."""
        return any(not t.caught_up.is_set() for t in self._tailers)

    def _started(self, restored: bool) -> None:
        loop = asyncio.get_running_loop()
        if restored:
            self._tasks.append(loop.create_task(
                self._requeue_recent(), name="orchestrator-requeue-restored"))
        log.info("orchestrator: started; %d open waits recovered (%s)",
                 len(self._timers.open), self._restored_from)
        settle_heap()  # thousands of waits make every full collection long

    async def _restore(self) -> tuple[list[str], bool]:
        """Seed the timer with the open waits at a checkpoint: the positions to read the
        log after, and whether any came from a checkpoint (False: the log's start).

        Per partition, the further of the workflows read model's checkpoint and the
        archive's open-wait snapshot (:mod:`chatlog.orchestrator._restore`): each is
        the fold of the log up to its position, so its open waits plus the log after
        it are every open wait. Jobs enqueued before the checkpoint in the last day
        are re-checked in the background. Without either, the log is read from its
        start.
        """
        path = self.settings.sqlite_path
        point = None
        try:
            point = await asyncio.to_thread(restore_point, path, self.store.partitions)
        except sqlite3.Error as exc:
            log.warning("orchestrator: cannot read the workflows read model %s (%s); using "
                        "the archive's snapshot or the log from its start", path, exc)
        chosen = start_point(self.store, point, await read_snapshots(self.store))
        for row in chosen.rows:
            wait = _restored_wait(row)
            if wait is not None:
                self._timers.add(wait)
        self._restored_from = chosen.describe()
        self._start = chosen
        return chosen.positions, chosen.restored

    async def _requeue_recent(self) -> None:
        """Re-check the jobs of the last day that the restored checkpoint covers: from the
        read model, and from the archive for the partitions that start at its snapshot
        (:mod:`._recent_jobs`)."""
        since = int((time.time() - _REQUEUE_HORIZON) * 1000)
        rows: list[RecentJob] = []
        try:
            rows = await asyncio.to_thread(recent_jobs, self.settings.sqlite_path, since)
        except sqlite3.Error as exc:
            log.warning("orchestrator: cannot re-check restored jobs (%s)", exc)
        archive, start = self.store.archive, self._start
        for p in range(self.store.partitions):
            if archive is None or start is None or start.sources[p] != "snapshot":
                continue
            try:
                rows.extend(await asyncio.to_thread(
                    archived_recent_jobs, archive, p, since, start.positions[p]))
            except Exception as exc:  # the archive unreadable: say so, start anyway
                log.warning("orchestrator: cannot re-check the archived jobs of partition %d "
                            "(%s)", p, exc)
        for project, name, workflow_id, data in rows:
            self._requeue_pending.append(
                (ProjectKey(uuid.UUID(project), name), workflow_id, data))
        self._requeue_ready.set()

    async def _caught_up(self, restored: bool) -> None:
        """Wait for every tailer's catch-up (raise what killed a tailer or the timer), then
        finish the start: on its own task (``start(wait=False)``), keep a failure."""
        try:
            await until_caught_up(self._tailers, self._tasks)
        except Exception as exc:
            if asyncio.current_task() is not self._catch_up:
                raise
            self.problem = f"the orchestrator's start failed: {exc.__class__.__name__}: {exc}"
            log.exception("orchestrator: %s", self.problem)
            return
        self._started(restored)

    async def stop(self) -> None:
        """Stop the tailers and the timer; pending waits raise :class:`OrchestratorStopped`."""
        if not self._running:
            return
        self._running = False
        tasks = [*self._tasks, *self._expiries, *filter(None, [self._catch_up])]
        self._catch_up = None
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

    @property
    def blocked(self) -> int:
        """How many callers wait for an event of a workflow, having read its state."""
        return self._dispatcher.blocked()

    def blocked_on(self, project: ProjectKey, workflow_id: str) -> int:
        """How many callers wait on this workflow, having read its state: an event
        appended now reaches them through the tailer."""
        return self._dispatcher.blocked(aggregate_key(project.key, "workflow", workflow_id))

    async def until_blocked(
        self, project: ProjectKey, workflow_id: str, count: int = 1
    ) -> None:
        """Return once ``count`` callers block in a wait on this workflow.

        For tests and tools that must act only once a wait is in place (bound
        it with ``asyncio.timeout``): a fixed sleep would, on a slow machine,
        let the action come first and silently test the "already there" path.
        """
        key = aggregate_key(project.key, "workflow", workflow_id)
        await self._dispatcher.until_blocked(key, count)

    def _on_events(self, events: list[RecordedEvent]) -> None:
        keys = [aggregate_key(e.project, e.aggregate_type, e.aggregate_id) for e in events]
        for event, key in zip(events, keys, strict=True):
            self._timers.observe(event, key)
            if event.type == JobEnqueued.event_type:
                self._requeue_if_lost(event)
        self._dispatcher.dispatch_all(events, keys)  # every waiter of the batch, in one pass

    def _requeue_if_lost(self, event: RecordedEvent) -> None:
        """Make sure an enqueued job is on its job stream (idempotent by job id).

        ``enqueue_job`` appends ``job.enqueued`` and then pushes the job; a
        crash or an outage between the two would leave a job in the history
        that no worker ever sees. Every orchestrator re-pushes the jobs it
        reads from the log (recent ones, on catch-up); the push does nothing
        for a job already queued, running, done or dead.
        """
        if (utc_now() - event.time).total_seconds() > _REQUEUE_HORIZON:
            return
        self._requeue_pending.append(
            (ProjectKey(event.project, event.project_name), event.aggregate_id, event.data))
        self._requeue_ready.set()

    async def _run_requeue(self) -> None:
        while True:
            await self._requeue_ready.wait()
            self._requeue_ready.clear()
            pending = self._requeue_pending
            while pending:
                batch = [pending.popleft() for _ in range(min(_REQUEUE_BATCH, len(pending)))]
                await asyncio.gather(*(self._requeue(*e) for e in batch))

    async def _requeue(self, project: ProjectKey, workflow_id: str, data: Any) -> None:
        try:
            job = JobEnqueued.model_validate(data)
        except ValidationError:
            if not isinstance(data.get("payload"), orjson.Fragment):
                return
            # A big payload, checked when it was enqueued: pushed as its JSON.
            job = JobEnqueued.model_construct(**data)
        delay = 0.2
        while True:
            try:
                await self._jobs.push(project, workflow_id, job)
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
                self._dispatcher.began_blocking()
                if self._after_read is not None:
                    await self._after_read()
                if deadline is None:  # no Timeout object per wait (10,000 end in one burst)
                    ended = await waiter.future
                else:
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
        return await self._view(project, state)

    async def wait_for_start(self, project: ProjectKey, workflow_id: str) -> RecordedEvent:
        """Wait until the workflow's wait for ``start_task`` ends; the event that ended it.

        That is ``workflow.started`` (or ``workflow.cancelled`` / ``failed`` if
        someone ended it first: check ``event.type``). When the deadline
        passes, the durable timer appends ``timed_out`` + ``failed`` and this
        raises :class:`WaitTimeout` naming the workflow, ``start_task`` and
        the time waited.
        """
        return await self._wait_for(project, workflow_id, WorkflowCreated.event_type, "start_task")

    async def wait_for_approval(self, project: ProjectKey, workflow_id: str) -> RecordedEvent:
        """Wait until the latest approval request is decided; the event that decided it.

        ``workflow.approved`` or ``workflow.rejected`` (or ``cancelled`` /
        ``failed``); :class:`WaitTimeout` when the approval deadline passed.
        :class:`InvalidTransition` if no approval was ever requested.
        """
        return await self._wait_for(
            project, workflow_id, ApprovalRequested.event_type, "approval"
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
        if ended.type == WorkflowTimedOut.event_type:
            raise WaitTimeout(workflow_id, awaited, float(ended.data.get("waited", 0.0)))
        return ended


def _restored_wait(row: OpenWaitRow) -> OpenWait | None:
    """The open wait of a read-model row, as the timer would have observed it."""
    target = STATE_AFTER.get(row.opened_by)
    raw = row.data.get("deadline")
    if target not in AWAITED or not isinstance(raw, str):
        return None
    project = uuid.UUID(row.project)
    timeout = next((row.data[k] for k in TIMEOUT_FIELDS if k in row.data), 0.0)
    return OpenWait(
        key=aggregate_key(project, "workflow", row.workflow_id),
        project=project,
        project_name=row.project_name,
        workflow_id=row.workflow_id,
        awaited=AWAITED[target],
        deadline=datetime.fromisoformat(raw),
        timeout=float(timeout) if isinstance(timeout, int | float) else 0.0,
        since=datetime.fromtimestamp(row.time_ms / 1000, tz=UTC),
        version=row.version,
    )


__all__ = ["Orchestrator", "WorkflowView", "check_workflow_id", "timeout_reason"]
