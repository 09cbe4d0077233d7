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

from chatlog.errors import ChatlogError, PositionTrimmed
from chatlog.events import RecordedEvent
from chatlog.eventstore import Cursor, EventStore

log = logging.getLogger(__name__)


class Subscriber:
    """A live reader's bounded buffer of events not yet written out."""

    __slots__ = ("buffer", "limit", "overflowed", "wakeup")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buffer: deque[RecordedEvent] = deque()
        self.wakeup = asyncio.Event()
        self.overflowed = False

    def push(self, batch: list[RecordedEvent]) -> bool:
        """Buffer ``batch``; False (and marked overflowed) when it does not fit."""
        if self.overflowed:
            return False
        if len(self.buffer) + len(batch) > self.limit:
            self.overflowed = True
            self.buffer.clear()
            self.wakeup.set()
            return False
        self.buffer.extend(batch)
        self.wakeup.set()
        return True

    def drain(self) -> list[RecordedEvent]:
        events = list(self.buffer)
        self.buffer.clear()
        self.wakeup.clear()
        return events


class Fanout:
    """The shared tailer; ``subscribe`` to receive every event appended from then on."""

    def __init__(
        self,
        store: EventStore,
        *,
        buffer: int,
        on_count: Callable[[int], None] | None = None,
        on_cutoff: Callable[[], None] | None = None,
        block: float = 1.0,
    ) -> None:
        self.store = store
        self.buffer = buffer
        self.block = block
        self._subscribers: set[Subscriber] = set()
        self._on_count = on_count
        self._on_cutoff = on_cutoff
        self._task: asyncio.Task[None] | None = None
        #: Where the shared tail stands (None until it has read the heads).
        self.cursor: Cursor | None = None

    def __len__(self) -> int:
        return len(self._subscribers)

    def subscribe(self) -> Subscriber:
        sub = Subscriber(self.buffer)
        self._subscribers.add(sub)
        self._count()
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

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="chatlog-fanout")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            try:
                if self.cursor is None:
                    self.cursor = await self.store.heads()
                async for batch in self.store.tail(self.cursor, block=self.block):
                    for ev in batch:
                        self.cursor = self.cursor.advanced(ev.partition, ev.position)
                    self.publish(batch)
                    backoff = 0.05
            except ChatlogError as exc:
                # Redis down before the first read (StoreUnavailable), or the
                # log trimmed under us: start again from the heads.
                log.warning("fan-out tail: %s; retrying in %.2f s", exc, backoff)
                if isinstance(exc, PositionTrimmed):
                    self.cursor = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
