"""The per-project index (issue 15 #3): every append, single or group-committed, adds
its position; a project's reads, forwards and backwards, return exactly its events
in order, with several projects of one partition merged by position. On one server,
Redis 7 and the cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from chatlog.eventstore import START, EventStore
from chatlog.eventstore.project_index import (
    build_project_index,
    indexed,
    read_projects,
    read_projects_before,
)
from chatlog.identity import normalize_project_id
from tests.helpers import message

NAMES = [f"proj-{i}" for i in range(6)]


async def _pages(read: Callable[[str], Any], start: str, step: int) -> list[str]:
    got: list[str] = []
    at = start
    while True:
        page = await read(at)
        got += [fields[b"i"].decode() for _, fields in page]
        if len(page) < step:
            return got
        at = page[-1][0].decode()


async def test_a_projects_reads_return_its_events_in_order(store_factory: Any) -> None:
    store: EventStore = await store_factory(partitions=4)
    assert await indexed(store)
    sent: dict[str, list[str]] = {name: [] for name in NAMES}

    async def writer(name: str) -> None:
        for i in range(12):
            ev = message(name, f"t{i % 3}", f"{name} {i}")
            await store.append_one(ev)
            sent[name].append(str(ev.id))

    await asyncio.gather(*(writer(name) for name in NAMES))  # group commits
    keys = {name: normalize_project_id(name).key for name in NAMES}
    for name in NAMES:
        p = store.partition_of(keys[name])
        got = await _pages(lambda after, k=keys[name], p=p: read_projects(
            store, p, [k], after, 5), START, 5)
        assert got == sent[name], name
        back = await _pages(lambda before, k=keys[name], p=p: read_projects_before(
            store, p, [k], None if before == "+" else before, 5), "+", 5)
        assert back == sent[name][::-1], name
    # Several projects of one partition: merged by position, as the log has them.
    by_partition: dict[int, list[str]] = {}
    for name in NAMES:
        by_partition.setdefault(store.partition_of(keys[name]), []).append(name)
    for p, names in by_partition.items():
        wanted = {i for name in names for i in sent[name]}
        log = [f[b"i"].decode() for _, f in await store.read_raw(p, START, 1000)]
        merged = await _pages(lambda after, p=p, names=names: read_projects(
            store, p, [keys[n] for n in names], after, 7), START, 7)
        assert merged == [i for i in log if i in wanted]


async def test_a_log_from_before_the_index_gets_it_while_appends_go_on(
        store_factory: Any) -> None:
    store: EventStore = await store_factory(partitions=2)
    for i in range(30):
        await store.append_one(message(NAMES[i % 3], "t", f"old {i}"))
    keys = [normalize_project_id(name).key for name in NAMES[:3]]
    for k in keys:
        await store.redis.delete(store.keys.project_index(store.partition_of(k), k))
    await store.redis.hdel(store.keys.meta, "project_index")

    async def appends() -> None:
        for i in range(20):
            await store.append_one(message(NAMES[i % 3], "t", f"new {i}"))

    built, _ = await asyncio.gather(build_project_index(store, chunk=2), appends())
    assert built and await indexed(store)
    for k in keys:
        p = store.partition_of(k)
        log = [pos for pos, f in await store.read_raw(p, START, 1000)
               if f[b"a"].startswith(str(k).encode())]
        index = [pos for pos, _ in await store.redis.xrange(store.keys.project_index(p, k))]
        assert index == log
        assert len(log) in (16, 17)


async def test_a_deletion_trims_the_index_with_the_log(store_factory: Any) -> None:
    store: EventStore = await store_factory()
    positions = [(await store.append_one(message(NAMES[i % 2], "t", f"m {i}"))).position
                 for i in range(10)]
    await store.trim(0, positions[6])
    for n, name in enumerate(NAMES[:2]):
        k = normalize_project_id(name).key
        index = [pos.decode() for pos, _ in await store.redis.xrange(
            store.keys.project_index(0, k))]
        assert index == positions[6:][n::2]
        got = await read_projects(store, 0, [k], START, 100)
        assert [pos.decode() for pos, _ in got] == index
