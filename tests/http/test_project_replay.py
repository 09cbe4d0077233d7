"""A project-filtered replay reads that project's events only (issue 15 #3, the
per-project index): exactly its events, in order, across the archive/Redis boundary,
for a number of bytes from Redis that does not grow when other projects write."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from chatlog.erasure import Eraser
from chatlog.eventstore import EmbeddedValkey, EventStore
from chatlog.eventstore.archive import Archive
from chatlog.eventstore.archiver import Archiver, HotWindow
from chatlog.eventstore.migration import migrate
from chatlog.http import Services, create_app, stats
from chatlog.http.stats import STATS
from chatlog.identity import normalize_project_id
from chatlog.settings import Settings
from tests.helpers import eventually, message
from tests.http.conftest import read_sse

SMALL = normalize_project_id("Small").key
BIG = normalize_project_id("Big").key


async def _fill(store: EventStore, big: int, small_every: int | None, tag: str) -> list[str]:
    """``big`` events of Big with one of Small after every ``small_every`` (None: no
    Small); Small's ids."""
    small: list[str] = []
    pad = "x" * 300
    for i in range(big):
        await store.append_one(message("Big", f"b{i % 7}", f"{tag} {i} {pad}"))
        if small_every is not None and i % small_every == 0:
            ev = message("Small", f"s{i % 3}", f"{tag} small {i}")
            await store.append_one(ev)
            small.append(str(ev.id))
    return small


async def _sent_bytes(store: EventStore) -> int:
    info: dict[str, Any] = await store.redis.info("stats")
    return int(info["total_net_output_bytes"])


@pytest.fixture
async def served(valkey_factory: Callable[..., EmbeddedValkey], tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch
                 ) -> AsyncIterator[tuple[EventStore, Archive, TestClient[Any, Any]]]:
    """A store with an archive on a Valkey of its own (so its byte counters are this
    test's), and the app over it (no background services).

    Every app runs the stats sampler, whose ``XINFO STREAM`` each second is answered
    with the stream's first and last entries (~2 KB here): landing in one measured
    replay and not the other, it made the byte counts flaky on a loaded machine. It
    takes its first sample here, then sleeps past the test."""
    monkeypatch.setattr(stats, "INTERVAL", 3600.0)
    server = valkey_factory()
    archive = Archive.open(str(tmp_path / "archive"))
    store = await EventStore.open(server.url, archive=archive)
    settings = Settings(redis_url=server.url, data_dir=tmp_path / "data")
    settings.data_dir.mkdir()
    client = TestClient(TestServer(create_app(settings, store, services=Services())))
    await client.start_server()
    try:
        sampler = client.server.app[STATS]
        await eventually(lambda: sampler.samples, what="the stats sampler's first sample")
        yield store, archive, client
    finally:
        await client.close()
        await store.close()


async def _replay(client: TestClient[Any, Any], project: str, limit: int) -> list[str]:
    ids: list[str] = []
    params = {"project": project, "limit": str(limit)}
    while True:
        resp = await client.get("/v1/events", params=params)
        assert resp.status == 200, await resp.text()
        page = await resp.json()
        ids += [e["id"] for e in page["events"]]
        if not page["has_more"]:
            return ids
        params["after"] = page["cursor"]


async def test_a_project_replay_reads_its_own_events_across_tiers(served: Any) -> None:
    store, archive, client = served
    small = await _fill(store, 600, 50, "first")
    archiver = Archiver(store, archive, HotWindow(events=150, seconds=0, bytes=0),
                        segment_events=100)
    [result] = await archiver.run_pass()
    assert result.trimmed > 0
    archive.reload()
    assert archive.count(0) > 400
    # Redis keeps the index of the hot tail only: bounded as the stream is.
    hot = await store.redis.xrange(store.keys.log(0))
    hot_small = sum(1 for _, f in hot if f[b"a"].startswith(str(SMALL).encode()))
    assert await store.redis.xlen(store.keys.project_index(0, SMALL)) == hot_small
    assert await store.redis.xlen(store.keys.project_index(0, BIG)) == len(hot) - hot_small
    assert 0 < hot_small < len(small)

    # Every event of Small exactly once, in order, in pages that cross the boundary.
    for limit in (1, 3, 1000):
        assert await _replay(client, "Small", limit) == small, limit

    # Backwards (the console's newest-first pages) too.
    for limit in (1, 4, 1000):
        assert await _replay_back(client, "Small", limit) == small[::-1], limit

    before = await _sent_bytes(store)
    assert await _replay(client, "Small", 1000) == small
    first_cost = await _sent_bytes(store) - before - 16  # the INFO reply's own length varies
    before = await _sent_bytes(store)
    assert await _replay_back(client, "Small", 1000) == small[::-1]
    first_back = await _sent_bytes(store) - before - 16

    # Big writes 5x more: Small's replay reads no more from Redis than it did.
    await _fill(store, 1500, None, "more")
    before = await _sent_bytes(store)
    assert await _replay(client, "Small", 1000) == small
    second_cost = await _sent_bytes(store) - before
    log_bytes = 1500 * 300
    assert second_cost <= first_cost + 200, (first_cost, second_cost)
    assert second_cost < log_bytes / 20
    before = await _sent_bytes(store)
    assert await _replay_back(client, "Small", 1000) == small[::-1]
    second_back = await _sent_bytes(store) - before
    assert second_back <= first_back + 200, (first_back, second_back)

    # The SSE stream's catch-up reads the same way.
    async with client.get("/v1/events/stream", params={"project": "Small"}) as resp:
        assert resp.status == 200
        frames = await read_sse(resp, len(small))
    assert [data["id"] for _, data in frames] == small


async def _replay_back(client: TestClient[Any, Any], project: str, limit: int) -> list[str]:
    ids: list[str] = []
    params = {"project": project, "limit": str(limit), "before": "end"}
    while True:
        resp = await client.get("/v1/events", params=params)
        assert resp.status == 200, await resp.text()
        page = await resp.json()
        ids += [e["id"] for e in page["events"]]
        if not page["has_more"]:
            return ids
        params["before"] = page["cursor"]


async def test_erasure_and_migration_keep_the_index(served: Any, valkey_factory: Callable[
        ..., EmbeddedValkey], tmp_path: Path) -> None:
    store, archive, client = served
    kept: list[str] = []
    for i in range(6):
        await store.append_one(message("Small", "gone", f"erased {i}"))
        ev = message("Small", "kept", f"kept {i}")
        await store.append_one(ev)
        kept.append(str(ev.id))
        await store.append_one(message("Big", "b", f"big {i}"))
    eraser = Eraser(store, archive=archive)
    report = await eraser.erase(SMALL, "Small", "gone", requested_by="test")
    assert report.state == "done"
    index = await store.redis.xrange(store.keys.project_index(0, SMALL))
    assert len(index) == 6 + 1  # the kept thread and the tombstone
    events = await _replay_events(client, "Small")
    assert [e["id"] for e in events if e["type"] == "message.appended"] == kept

    # A migrated log (here to 4 partitions) has the index of every event it copied.
    target = await EventStore.open(valkey_factory().url, partitions=4)
    try:
        await migrate(store, target)
        p = target.partition_of(SMALL)
        assert await target.redis.xlen(target.keys.project_index(p, SMALL)) == 7
        q = target.partition_of(BIG)
        assert await target.redis.xlen(target.keys.project_index(q, BIG)) == 6
    finally:
        await target.close()


async def _replay_events(client: TestClient[Any, Any], project: str) -> list[dict[str, Any]]:
    resp = await client.get("/v1/events", params={"project": project, "limit": "1000"})
    assert resp.status == 200, await resp.text()
    page: dict[str, Any] = await resp.json()
    return list(page["events"])


async def test_a_log_from_before_the_index_is_scanned_then_indexed(
        served: Any, tmp_path: Path) -> None:
    """A log created before the index (no ``project_index`` flag) replays by scanning,
    and gets its index the next time it is opened."""
    store = served[0]
    ids = []
    for i in range(3):
        ev = message("Small", "s", f"m {i}")
        await store.append_one(ev)
        ids.append(str(ev.id))
        await store.append_one(message("Big", "b", f"b {i}"))
    old = await EventStore.open(store.url)
    await store.redis.delete(store.keys.project_index(0, SMALL),
                             store.keys.project_index(0, BIG))
    await store.redis.hdel(store.keys.meta, "project_index")
    try:
        settings = Settings(redis_url=store.url, data_dir=tmp_path / "other")
        async with TestClient(TestServer(create_app(settings, old, services=Services()))) as c:
            assert await _replay(c, "Small", 2) == ids
    finally:
        await old.close()
    reopened = await EventStore.open(store.url)
    try:
        assert await store.redis.hget(store.keys.meta, "project_index") == b"1"
        assert await store.redis.xlen(store.keys.project_index(0, SMALL)) == 3
        assert await store.redis.xlen(store.keys.project_index(0, BIG)) == 3
        settings = Settings(redis_url=store.url, data_dir=tmp_path / "third")
        app = create_app(settings, reopened, services=Services())
        async with TestClient(TestServer(app)) as c:
            assert await _replay(c, "Small", 2) == ids
    finally:
        await reopened.close()


async def test_the_integrations_appends_are_in_the_index(redis_url: str, key_prefix: str
                                                          ) -> None:
    """The eventsourcing recorder writes the log with scripts of its own: its events
    (and its tracking records) are in their project's index like any other."""
    from eventsourcing.persistence import StoredEvent, Tracking
    from eventsourcing.utils import Environment

    from chatlog.integrations.eventsourcing import ChatlogFactory

    def record() -> None:
        factory = ChatlogFactory(Environment("Bank", {"CHATLOG_REDIS_URL": redis_url,
                                                      "CHATLOG_KEY_PREFIX": key_prefix}))
        try:
            oid = uuid.uuid4()
            factory.process_recorder().insert_events(
                [StoredEvent(originator_id=oid, originator_version=v, topic="t:A",
                             state=b"s") for v in (1, 2, 3)],
                tracking=Tracking("Upstream", 7))
        finally:
            factory.close()

    await asyncio.to_thread(record)
    store = await EventStore.open(redis_url, prefix=key_prefix)
    try:
        bank = normalize_project_id("Bank").key
        log = [pos for pos, _ in await store.read_raw(0)]
        index = [pos for pos, _ in await store.redis.xrange(store.keys.project_index(0, bank))]
        assert len(log) == 4 and index == log
    finally:
        await store.close()
