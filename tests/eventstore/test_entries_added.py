"""The lifetime entry count of a partition (``entries-added``) is read without the
stream's first and last entries: the stats sampler asks for it every second, and
``XINFO STREAM`` answered with two whole events beside it (~2 MB a second of 1 MB
events, sent by Valkey and parsed by the server)."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

from chatlog.eventstore import EmbeddedValkey, EventStore
from chatlog.eventstore.added import entries_added
from chatlog.http._state import AppState
from chatlog.http.stats import Stats
from tests.helpers import message


async def test_entries_added_counts_deleted_entries_and_knows_a_missing_stream(
        store: EventStore) -> None:
    key = store.keys.log(0)
    assert await entries_added(store.redis, key) is None
    done = [await store.append_one(message(content=f"m{i}")) for i in range(3)]
    await store.redis.xdel(key, done[0].position)
    assert await entries_added(store.redis, key) == 3
    assert await store.redis.xlen(key) == 2


async def _sent(store: EventStore) -> int:
    info: dict[str, Any] = await store.redis.info("stats")
    return int(info["total_net_output_bytes"])


async def test_a_stats_sample_does_not_send_the_streams_events(
        valkey_factory: Callable[..., EmbeddedValkey]) -> None:
    store = await EventStore.open(valkey_factory().url)  # its byte counters are ours
    try:
        big = "x" * 500_000
        for i in range(2):
            await store.append_one(message(thread_id=f"t{i}", content=big))
        stats = Stats(cast(AppState, SimpleNamespace(store=store)))
        before = await _sent(store)
        assert await stats._appended_total() == 2
        assert await _sent(store) - before < 20_000  # was ~1 MB: first + last entry
    finally:
        await store.close()
