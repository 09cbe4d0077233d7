"""Tailing: new events arrive as appended; a dropped connection loses and repeats nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis.asyncio as aioredis

from chatlog.events import RecordedEvent
from chatlog.eventstore import Cursor, EmbeddedValkey, EventStore
from tests.helpers import eventually, message


async def _collect(store: EventStore, cursor: Cursor, want: int,
                   into: list[RecordedEvent]) -> None:
    async for batch in store.tail(cursor, block=0.2):
        into.extend(batch)
        if len(into) >= want:
            return


async def _wait_len(items: list[RecordedEvent], n: int, timeout: float = 20.0) -> None:
    await eventually(lambda: len(items) >= n, timeout=timeout, what=f"{n} events tailed")


async def test_tail_delivers_new_events_in_order(store: EventStore) -> None:
    await store.append_one(message(content="before"))
    cursor = await store.heads()
    got: list[RecordedEvent] = []
    task = asyncio.create_task(_collect(store, cursor, 20, got))
    for i in range(20):
        await store.append_one(message(content=str(i)))
    await asyncio.wait_for(task, 20)
    assert [e.data["content"] for e in got] == [str(i) for i in range(20)]


async def test_tail_survives_killed_connections(store: EventStore, redis_url: str) -> None:
    got: list[RecordedEvent] = []
    task = asyncio.create_task(_collect(store, Cursor.start(1), 60, got))
    admin = aioredis.from_url(redis_url)
    try:
        for round_ in range(3):
            for i in range(10):
                await store.append_one(message(content=f"{round_}-{i}"))
            await _wait_len(got, (round_ + 1) * 10 + round_ * 10)
            # drop every blocked XREAD connection, then append while it is gone
            for client in await admin.client_list():
                if "xread" in client.get("cmd", ""):
                    await admin.client_kill_filter(_id=client["id"])
            for i in range(10):
                await store.append_one(message(content=f"{round_}-gap-{i}"))
        await asyncio.wait_for(task, 20)
    finally:
        await admin.aclose()
        task.cancel()
    positions = [e.position for e in got]
    assert len(positions) == len(set(positions)) == 60
    assert [e.version for e in got] == list(range(1, 61))


async def test_tail_resumes_after_the_server_restarts(
    valkey_factory: Callable[..., EmbeddedValkey], key_prefix: str
) -> None:
    server = valkey_factory()
    store = await EventStore.open(server.url, prefix=key_prefix)
    other = await EventStore.open(server.url, prefix=key_prefix)
    got: list[RecordedEvent] = []
    task = asyncio.create_task(_collect(store, Cursor.start(1), 30, got))
    try:
        for i in range(10):
            await other.append_one(message(content=str(i)))
        await _wait_len(got, 10)
        server.kill()
        server.start()
        # appended while the tailer is still reconnecting
        for i in range(10, 30):
            await other.append_one(message(content=str(i)))
        await asyncio.wait_for(task, 20)
    finally:
        task.cancel()
        await store.close()
        await other.close()
    assert [e.data["content"] for e in got] == [str(i) for i in range(30)]


async def test_a_cancelled_tail_stops(store: EventStore) -> None:
    """Cancelling a tail ends it, blocked or mid-batch, even though redis-py may
    complete a command whose task was cancelled."""
    for _ in range(50):
        got: list[RecordedEvent] = []
        task = asyncio.create_task(_collect(store, Cursor.start(1), 10**9, got))
        await store.append_one(message())
        await asyncio.sleep(0.001)  # jitter: the cancel lands blocked or mid-batch
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=10)
        assert task in done, "the tail ran on after it was cancelled"
        assert task.cancelled()


async def test_tail_raw_yields_undecoded_entries_in_order(store: EventStore) -> None:
    got: list[tuple[int, bytes, dict[bytes, bytes]]] = []

    async def collect() -> None:
        async for raw in store.tail_raw(Cursor.start(1), block=0.2):
            got.extend(raw)
            if len(got) >= 5:
                return

    task = asyncio.create_task(collect())
    results = [await store.append_one(message(content=str(i))) for i in range(5)]
    await asyncio.wait_for(task, 20)
    assert [pos.decode() for _, pos, _ in got] == [r.position for r in results]
    assert all(p == 0 and b"/thread/" in fields[b"a"] for p, _, fields in got)
