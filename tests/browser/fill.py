"""Fill a running ``chatlog serve``'s log fast: batched appends through the store, not HTTP."""

from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from chatlog.events import NewEvent, aggregate_key
from chatlog.eventstore.runtime import open_store
from chatlog.identity import normalize_project_id
from chatlog.settings import Settings

BATCH = 1000  # events per append: one thread's messages, all or nothing
CONCURRENT = 4


_BASE = uuid.uuid4().hex
_COUNT = iter(range(2**48))


def _next_id() -> str:
    """A distinct, valid UUID string per event, without a random draw each."""
    n = next(_COUNT)
    return f"{_BASE[:8]}-{_BASE[8:12]}-4{_BASE[13:16]}-8{_BASE[17:20]}-{n:012x}"


@dataclass(slots=True)
class _Message:
    """What :meth:`EventStore.append` reads of a :class:`NewEvent`, without pydantic's
    validation: 200,000 validated models cost more than the appends themselves."""

    project: uuid.UUID
    project_name: str
    aggregate_id: str
    data: dict[str, Any]
    id: str = field(default_factory=lambda: _next_id())
    type: str = "message.appended"
    aggregate_type: str = "thread"
    id_supplied: bool = False
    schema_version: int = 1

    @property
    def aggregate(self) -> str:
        return aggregate_key(self.project, self.aggregate_type, self.aggregate_id)


async def _fill(data_dir: Path, total: int, project: str) -> None:
    settings = Settings(data_dir=data_dir)
    key = normalize_project_id(project, settings.project_namespace)
    async with open_store(settings) as opened:
        store = opened.store

        async def batch(n: int) -> None:
            thread = f"thread-bulk-{n:05d}"
            events = [
                _Message(key.key, project, thread, {
                    "thread_id": thread, "role": "user", "content": f"bulk {n * BATCH + i}",
                    "metadata": {}})
                for i in range(min(BATCH, total - n * BATCH))
            ]
            await store.append(cast(list[NewEvent], events))

        batches = (total + BATCH - 1) // BATCH
        for first in range(0, batches, CONCURRENT):
            # In order: each group lands after the previous one, so "bulk N" grows with N.
            await asyncio.gather(*(batch(n) for n in range(first, min(first + CONCURRENT,
                                                                      batches))))


def fill_log(data_dir: Path, total: int, project: str = "Bulk") -> float:
    """Append ``total`` messages to ``project`` in the server's log; return the seconds taken."""
    began = time.perf_counter()
    # Its own thread: Playwright's sync API may run an event loop in this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _fill(data_dir, total, project)).result()
    return time.perf_counter() - began
