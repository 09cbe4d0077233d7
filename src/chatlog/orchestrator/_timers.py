"""The durable timer's bookkeeping: every open wait of every workflow, by deadline.

Seeded on ``start()`` with the open waits of the workflows read model at its
checkpoint (or, without one, from the start of the log), then fed by the
tailer with every workflow event after that, so it knows the open waits
whoever created them, and after a restart the ones that were open while the
orchestrator was down. Pure bookkeeping: the orchestrator decides what firing means.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import uuid
from dataclasses import dataclass
from datetime import datetime

from chatlog.events import AWAITED, STATE_AFTER, RecordedEvent, aggregate_key
from chatlog.orchestrator.machine import wait_timeout


@dataclass(slots=True)
class OpenWait:
    """A workflow waiting for ``awaited`` until ``deadline``."""

    key: str
    project: uuid.UUID
    project_name: str
    workflow_id: str
    awaited: str
    deadline: datetime
    timeout: float
    since: datetime
    #: The workflow's latest version the tailer has seen (job events included).
    version: int
    firing: bool = False


class DeadlineTimers:
    """Open waits keyed by workflow, and a heap of their deadlines."""

    def __init__(self) -> None:
        self.open: dict[str, OpenWait] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        #: Set whenever a deadline is added, so the timer loop re-plans its sleep.
        self.changed = asyncio.Event()

    def observe(self, event: RecordedEvent, key: str | None = None) -> None:
        """Update the open waits with one workflow event (in log order); ``key``: its
        aggregate's key, when the caller has it."""
        if key is None:
            key = aggregate_key(event.project, event.aggregate_type, event.aggregate_id)
        target = STATE_AFTER.get(event.type)
        if target is None:
            wait = self.open.get(key)
            if wait is not None and event.version > wait.version:
                wait.version = event.version
            return
        data = event.data
        raw = data.get("deadline")
        if target not in AWAITED or not isinstance(raw, str):
            self.open.pop(key, None)  # the wait before it ended; no new one opens
            return
        deadline = datetime.fromisoformat(raw)
        timeout = wait_timeout(data) or 0.0
        self.open[key] = OpenWait(
            key=key,
            project=event.project,
            project_name=event.project_name,
            workflow_id=event.aggregate_id,
            awaited=AWAITED[target],
            deadline=deadline,
            timeout=timeout,
            since=event.time,
            version=event.version,
        )
        self.push(key, deadline.timestamp())

    def add(self, wait: OpenWait) -> None:
        """Know ``wait`` (restored from a checkpoint) as if its opening event was observed."""
        self.open[wait.key] = wait
        self.push(wait.key, wait.deadline.timestamp())

    def push(self, key: str, when: float) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), key))
        if len(self._heap) > 4 * len(self.open) + 1024:
            self._compact()
        self.changed.set()

    def _compact(self) -> None:
        self._heap = [(w.deadline.timestamp(), next(self._seq), k) for k, w in self.open.items()]
        heapq.heapify(self._heap)

    def due(self, now: float) -> list[OpenWait]:
        """Open waits whose deadline is ``now`` or earlier and that are not firing yet."""
        out: list[OpenWait] = []
        while self._heap and self._heap[0][0] <= now:
            _, _, key = heapq.heappop(self._heap)
            wait = self.open.get(key)
            if wait is None or wait.firing or wait.deadline.timestamp() > now:
                continue
            wait.firing = True
            out.append(wait)
        return out

    def retry(self, wait: OpenWait, when: float) -> None:
        """Fire ``wait`` again at ``when`` (its expiry could not be written)."""
        current = self.open.get(wait.key)
        if current is wait:
            wait.firing = False
            self.push(wait.key, when)

    def next_deadline(self) -> float | None:
        return self._heap[0][0] if self._heap else None
