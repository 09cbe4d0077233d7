"""Nothing lost: every acknowledged append survives kill -9 of the Valkey server."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable

import pytest

from chatlog.errors import StoreUnavailable
from chatlog.eventstore import AppendResult, EmbeddedValkey, EventStore
from tests.helpers import eventually, message

pytestmark = pytest.mark.slow


async def test_acknowledged_appends_survive_kill_9(
    valkey_factory: Callable[..., EmbeddedValkey], key_prefix: str
) -> None:
    server = valkey_factory()
    store = await EventStore.open(server.url, prefix=key_prefix)
    acked: list[AppendResult] = []
    stop = asyncio.Event()

    async def writer(n: int) -> None:
        i = 0
        while not stop.is_set() and i < 2000:
            try:
                acked.append(await store.append_one(message(thread_id=f"w{n}", content=str(i))))
            except StoreUnavailable:
                return
            i += 1

    writers = [asyncio.create_task(writer(n)) for n in range(8)]
    await eventually(lambda: len(acked) >= 300, interval=0.005, what="300 appends acknowledged")
    assert server.pid is not None
    os.kill(server.pid, signal.SIGKILL)  # a crash, mid-load
    await asyncio.gather(*writers)
    stop.set()
    await store.close()
    server.kill()
    server.start()
    store = await EventStore.open(server.url, prefix=key_prefix)
    try:
        stored = await store.read(0, limit=100_000)
    finally:
        await store.close()
    by_position = {e.position: e for e in stored}
    for ack in acked:
        assert ack.position in by_position, f"acknowledged {ack} is lost"
        assert by_position[ack.position].version == ack.version
    positions = [e.position for e in stored]
    assert positions == sorted(positions, key=lambda p: tuple(map(int, p.split("-"))))
    for n in range(8):
        versions = [e.version for e in stored if e.aggregate_id == f"w{n}"]
        assert versions == list(range(1, len(versions) + 1))
