"""Waiters, the dispatcher that feeds them, and the per-partition tailer.

A wait registers its :class:`Waiter` *before* it reads the workflow. Every
workflow event the tailer reads afterwards is fed to it; events the read
already covered are recognised by their version and skipped. So an event that
lands between registering and blocking is never missed, whichever of the read
and the tailer sees it first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from chatlog import big_events
from chatlog.errors import PositionTrimmed, StoreUnavailable
from chatlog.events import RecordedEvent, aggregate_key
from chatlog.eventstore.codec import START, Cursor, decode_entry, flat_field, flat_fields
from chatlog.eventstore.connection import text
from chatlog.eventstore.store import EventStore
from chatlog.orchestrator._cancel import check_cancelled, raise_if_cancelling
from chatlog.orchestrator.machine import WorkflowState

log = logging.getLogger("chatlog.orchestrator")

Done = Callable[[WorkflowState], bool]


class Waiter:
    """One pending wait on one workflow: a folded state and a future."""

    __slots__ = ("_buffer", "done", "future", "state")

    def __init__(self, done: Done) -> None:
        self.done = done
        self.state: WorkflowState | None = None
        self._buffer: list[RecordedEvent] = []
        #: Resolves with the event that satisfied ``done``, or None: re-read and retry.
        self.future: asyncio.Future[RecordedEvent | None] = (
            asyncio.get_running_loop().create_future()
        )

    def begin(self, state: WorkflowState) -> bool:
        """Start from ``state`` (read after registering); True when already done."""
        self.state = state
        buffered, self._buffer = self._buffer, []
        if self.done(state):
            return True
        for event in buffered:
            self._apply(event)
        return self.future.done()

    def feed(self, event: RecordedEvent) -> None:
        self.feed_all((event,))

    def feed_all(self, events: Sequence[RecordedEvent]) -> None:
        """Events of this waiter's aggregate, in log order."""
        if self.future.done():
            return
        if self.state is None:
            self._buffer.extend(events)
            return
        for event in events:
            self._apply(event)
            if self.future.done():
                return

    def _apply(self, event: RecordedEvent) -> None:
        state = self.state
        assert state is not None
        if self.future.done() or event.version <= state.version:
            return  # the read already covered it
        if event.version != state.version + 1:
            self.future.set_result(None)  # a gap (cannot happen in order); re-read
            return
        state.apply(event)
        if self.done(state):
            self.future.set_result(event)

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)

    @property
    def blocked(self) -> bool:
        """True once it has read the state and waits for an event (not answered yet)."""
        return self.state is not None and not self.future.done()


class Dispatcher:
    """Aggregate key -> the waiters registered on it."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[Waiter]] = {}
        self._count = 0
        #: Set (and replaced) whenever a waiter starts blocking.
        self._blocking: asyncio.Event | None = None

    def __len__(self) -> int:
        return self._count

    def register(self, key: str, waiter: Waiter) -> None:
        waiters = self._waiters.setdefault(key, set())
        if waiter not in waiters:
            waiters.add(waiter)
            self._count += 1

    def unregister(self, key: str, waiter: Waiter) -> None:
        waiters = self._waiters.get(key)
        if waiters is not None and waiter in waiters:
            waiters.discard(waiter)
            self._count -= 1
            if not waiters:
                del self._waiters[key]

    def blocked(self, key: str | None = None) -> int:
        """How many waiters (on ``key``, or on any) read their state and now wait for an event."""
        if key is None:
            return sum(1 for ws in self._waiters.values() for w in ws if w.blocked)
        return sum(1 for w in self._waiters.get(key, ()) if w.blocked)

    def began_blocking(self) -> None:
        """Tell :meth:`until_blocked` callers that a waiter now blocks."""
        if self._blocking is not None:
            self._blocking.set()
            self._blocking = None

    async def until_blocked(self, key: str, count: int) -> None:
        """Return once at least ``count`` waiters on ``key`` block."""
        while self.blocked(key) < count:
            if self._blocking is None:
                self._blocking = asyncio.Event()
            await self._blocking.wait()

    def dispatch(self, event: RecordedEvent) -> None:
        self.dispatch_all([event])

    def dispatch_all(self, events: list[RecordedEvent], keys: Sequence[str] | None = None) -> None:
        """Feed a batch of events to their waiters in one pass.

        Events are grouped by aggregate first (one key and one lookup per event;
        events of aggregates nobody waits on are dropped there); each waiter of
        an aggregate then folds that aggregate's events in order and is
        answered once, with the first event that satisfied it. A burst that
        ends 10,000 waits costs 10,000 folds and 10,000 wake-ups, nothing per
        (event, waiter) pair and no future or callback beyond the one each
        blocked caller already awaits.
        """
        waiting = self._waiters
        if not waiting:
            return
        if keys is None:
            keys = [aggregate_key(e.project, e.aggregate_type, e.aggregate_id) for e in events]
        grouped: dict[str, list[RecordedEvent]] = {}
        for event, key in zip(events, keys, strict=True):
            if key in waiting:
                group = grouped.get(key)
                if group is None:
                    grouped[key] = [event]
                else:
                    group.append(event)
        for key, group in grouped.items():
            for waiter in list(waiting[key]):
                waiter.feed_all(group)

    def fail_all(self, exc: BaseException) -> None:
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.fail(exc)


class PartitionTailer:
    """Reads one partition's workflow events after ``position``, then live; forever.

    Catch-up reads raw entries and decodes only workflow events (cheap over a
    long log of messages); then one ``store.tail`` (one blocking connection)
    serves every waiter of the partition.
    """

    def __init__(
        self,
        store: EventStore,
        partition: int,
        on_events: Callable[[list[RecordedEvent]], None],
        *,
        block: float = 1.0,
        page: int = 5000,
        position: str = START,
    ) -> None:
        self.store = store
        self.partition = partition
        self.on_events = on_events
        self.block = block
        self.page = page
        #: Where the catch-up starts: the log's start, or a restored checkpoint.
        self.position = position
        self.caught_up = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                if not self.caught_up.is_set():
                    await self._catch_up()
                    self.caught_up.set()
                await self._follow()
            except PositionTrimmed as exc:
                raise_if_cancelling()
                log.warning("orchestrator: partition %d: %s; resuming at %s",
                            self.partition, exc, exc.horizon)
                self.position = exc.horizon or START
            except StoreUnavailable as exc:
                raise_if_cancelling()
                log.warning("orchestrator: partition %d: %s; retrying from %s",
                            self.partition, exc, self.position)
                await asyncio.sleep(0.5)
            except Exception:
                raise_if_cancelling()
                log.exception("orchestrator: tailer of partition %d failed; restarting from %s",
                              self.partition, self.position)
                await asyncio.sleep(0.5)

    async def _catch_up(self) -> None:
        marker = b"/workflow/"
        while True:
            entries = await self.store.read_flat(self.partition, self.position, self.page)
            raise_if_cancelling()
            if not entries:
                return
            batch = [
                await big_events.decode(self.partition, pos, flat_fields(flat))
                for pos, flat in entries
                if marker in flat_field(flat, b"a")
            ]
            last = entries[-1][0]
            self.position = text(last)
            if batch:
                self.on_events(batch)
            if len(entries) < self.page:
                return

    async def _follow(self) -> None:
        cursor = Cursor.start(self.store.partitions).advanced(self.partition, self.position)
        # Raw entries: only workflow events are decoded (most of a busy log is messages).
        marker = b"/workflow/"
        tail = self.store.tail_raw(
            cursor, partitions=[self.partition], block=self.block, on_idle=check_cancelled
        )
        try:
            async for raw in tail:
                raise_if_cancelling()
                last = raw[-1][1]
                self.position = text(last)
                # decoded here, no coroutine per event, unless a big body goes to the worker
                workflow = [
                    decode_entry(p, pos, fields) if big_events.big_field(fields) is None
                    else await big_events.decode(p, pos, fields)
                    for p, pos, fields in raw if marker in fields[b"a"]
                ]
                if workflow:
                    self.on_events(workflow)
        finally:
            with contextlib.suppress(Exception):
                await tail.aclose()  # type: ignore[attr-defined]
