"""One shared tail of the log, fanned out to every live subscriber (SSE).

A single task reads new events (``EventStore.tail``: one blocking XREAD on
one connection, however many subscribers) and hands each batch to every
subscriber's bounded buffer. A subscriber that falls ``limit`` events behind
is cut off: it is told so, leaves the fan-out, and resumes later from its
last id through a catch-up read. A slow subscriber never slows the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable

from chatlog.big_events import decode_unparsed
from chatlog.errors import ChatlogError, PositionTrimmed
from chatlog.events import RecordedEvent
from chatlog.eventstore import Cursor, EventStore

log = logging.getLogger(__name__)


class Subscriber:
    """A live reader's bounded buffer of events not yet written out."""

    __slots__ = ("buffer", "keepalive", "limit", "on_overflow", "overflowed", "wakeup")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buffer: deque[RecordedEvent] = deque()
        self.wakeup = asyncio.Event()
        self.overflowed = False
        #: Set by the fan-out's ticker: time for a keep-alive comment.
        self.keepalive = False
        #: Called when the buffer overflows (the writer may be stuck on a dead socket).
        self.on_overflow: Callable[[], None] | None = None

    def push(self, batch: list[RecordedEvent]) -> bool:
        """Buffer ``batch``; False (and marked overflowed) when it does not fit."""
        if self.overflowed:
            return False
        if len(self.buffer) + len(batch) > self.limit:
            self.overflowed = True
            self.buffer.clear()
            self.wakeup.set()
            if self.on_overflow is not None:
                self.on_overflow()
            return False
        self.buffer.extend(batch)
        self.wakeup.set()
        return True

    def drain(self) -> list[RecordedEvent]:
        events = list(self.buffer)
        self.buffer.clear()
        self.wakeup.clear()
        return events


class _Idle(Exception):
    """No subscribers left: the shared tail stops until the next one comes."""


class Fanout:
    """The shared tailer; ``await subscribe()`` to receive every event appended from then on.

    The tail runs only while someone listens: the first subscriber starts it
    from the log's heads (read before ``subscribe`` returns, so the
    subscriber's own catch-up read afterwards overlaps it: no gap), and it
    stops by itself once the last one has left. Every ``keepalive`` seconds it
    flags every subscriber for a keep-alive comment: one timer for all of
    them, rather than one per subscriber and event.
    """

    def __init__(
        self,
        store: EventStore,
        *,
        buffer: int,
        on_count: Callable[[int], None] | None = None,
        on_cutoff: Callable[[], None] | None = None,
        block: float = 1.0,
        keepalive: float = 15.0,
    ) -> None:
        self.store = store
        self.buffer = buffer
        self.keepalive = keepalive
        # Wake up often enough to tick keep-alives on time when the log is idle.
        self.block = min(block, keepalive / 2)
        self._last_tick = 0.0
        self._subscribers: set[Subscriber] = set()
        self._on_count = on_count
        self._on_cutoff = on_cutoff
        self._task: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()
        #: Where the shared tail stands (None while it is not running).
        self.cursor: Cursor | None = None

    def __len__(self) -> int:
        return len(self._subscribers)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def subscribe(self) -> Subscriber:
        """A new subscriber; it gets every event appended after this call began."""
        sub = Subscriber(self.buffer)
        self._subscribers.add(sub)
        self._count()
        try:
            await self._ensure_running()
        except BaseException:
            self.unsubscribe(sub)
            raise
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)
        self._count()

    def _count(self) -> None:
        if self._on_count is not None:
            self._on_count(len(self._subscribers))

    def publish(self, batch: list[RecordedEvent]) -> None:
        for sub in list(self._subscribers):
            if not sub.push(batch):
                self._subscribers.discard(sub)
                if self._on_cutoff is not None:
                    self._on_cutoff()
        self._count()

    def _cut_off_all(self) -> None:
        for sub in list(self._subscribers):
            sub.overflowed = True
            sub.wakeup.set()
        self._subscribers.clear()
        self._count()

    async def _ensure_running(self) -> None:
        if self.running:
            return
        async with self._starting:
            if self.running:
                return
            self.cursor = await self.store.heads()
            self._task = asyncio.get_running_loop().create_task(
                self._run(self.cursor), name="chatlog-fanout"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, _Idle):
                await task

    async def _idle(self) -> None:
        if not self._subscribers:
            raise _Idle()
        self._tick()

    def _tick(self) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._last_tick < self.keepalive:
            return
        self._last_tick = now
        for sub in self._subscribers:
            sub.keepalive = True
            sub.wakeup.set()

    async def _run(self, cursor: Cursor) -> None:
        backoff = 0.05
        self._last_tick = asyncio.get_running_loop().time()
        while self._subscribers:
            try:
                tail = self.store.tail_raw(cursor, block=self.block, on_idle=self._idle)
                async for raw in tail:
                    # A big event's data stays its JSON (split off in the worker process):
                    # subscribers only write it out again (issue 15 #9).
                    batch = [await decode_unparsed(p, pos, fields) for p, pos, fields in raw]
                    for ev in batch:
                        cursor = cursor.advanced(ev.partition, ev.position)
                    self.cursor = cursor
                    self.publish(batch)
                    backoff = 0.05
                    if not self._subscribers:
                        return
                    self._tick()
            except _Idle:
                return
            except PositionTrimmed:
                # Trimmed under us: nobody can be served from here; cut everyone off
                # (they resume from their last ids and get a clear 410 if gone).
                self._cut_off_all()
                return
            except ChatlogError as exc:
                log.warning("fan-out tail: %s; retrying in %.2f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
            except Exception:
                # Something no retry mends (an entry it cannot decode): the tail stops,
                # and its subscribers are cut off rather than left waiting in silence.
                # They resume from their last ids (the catch-up read then answers what
                # is wrong); the next subscriber starts the tail again from the heads.
                log.exception("fan-out tail failed after %s; cutting its subscribers off",
                              cursor)
                self._cut_off_all()
                return
