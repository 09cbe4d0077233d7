"""Group commits: what one append script call writes once at its end (the aggregates'
versions, their index lists) is what appends made one by one would have written."""

from __future__ import annotations

import asyncio

import pytest
from redis import exceptions as rexc

from chatlog.eventstore import EventStore, parse_position
from chatlog.identity import normalize_project_id
from tests.helpers import message

PROJECT = normalize_project_id("Blog-Project").key


async def test_appends_to_one_aggregate_in_one_group_commit_count_on(store: EventStore) -> None:
    # The first append goes alone; the 59 that arrive meanwhile go in one group commit,
    # ~20 of them to each thread.
    results = await asyncio.gather(*(
        store.append_one(message(thread_id=f"t{i % 3}", content=str(i))) for i in range(60)))
    for t in range(3):
        mine = sorted((r for i, r in enumerate(results) if i % 3 == t),
                      key=lambda r: parse_position(r.position))
        assert [r.version for r in mine] == list(range(1, 21))
        assert await store.aggregate_version(PROJECT, "thread", f"t{t}") == 20
        events = await store.read_aggregate(PROJECT, "thread", f"t{t}")
        assert [(e.position, e.version) for e in events] == [
            (r.position, r.version) for r in mine]
    # and the next append to each goes on from there
    after = await store.append([message(thread_id="t1", content="a"),
                                message(thread_id="t1", content="b")], expected_version=20)
    assert [r.version for r in after] == [21, 22]
    assert [e.version for e in await store.read_aggregate(PROJECT, "thread", "t1", 20)] == [
        20, 21, 22]


async def test_an_append_whose_index_is_broken_fails_alone(store: EventStore) -> None:
    partition = store.partition_of(PROJECT)
    broken = store.keys.aggregate_index(partition, f"{PROJECT}/thread/broken")
    await store.redis.set(broken, "not a list")
    results = await asyncio.gather(*(
        store.append_one(message(thread_id="broken" if i == 7 else f"t{i % 2}",
                                 content=str(i)))
        for i in range(30)), return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(failed) == 1 and isinstance(failed[0], rexc.ResponseError)
    assert "WRONGTYPE" in str(failed[0])
    for t, count in ((0, 15), (1, 14)):  # thread t1 without append 7
        events = await store.read_aggregate(PROJECT, "thread", f"t{t}")
        assert [e.version for e in events] == list(range(1, count + 1))


async def test_an_append_that_fails_part_way_counts_what_it_wrote(store: EventStore) -> None:
    # The project's replay index is broken: the event goes into the log, then its index
    # entry fails. The aggregate's version and index must still count the event, or the
    # next append would reuse its version.
    partition = store.partition_of(PROJECT)
    pidx = store.keys.project_index(partition, PROJECT)
    await store.redis.set(pidx, "not a stream")
    with pytest.raises(rexc.ResponseError, match="WRONGTYPE"):
        await store.append_one(message(thread_id="alone", content="first"))  # alone
    failed = await asyncio.gather(*(  # and in a group commit, beside another project's
        store.append_one(message(project="Other" if i % 2 else "Blog-Project",
                                 thread_id="grouped", content=str(i)))
        for i in range(10)), return_exceptions=True)
    assert [isinstance(r, rexc.ResponseError) for r in failed] == [i % 2 == 0
                                                                 for i in range(10)]
    await store.redis.delete(pidx)
    assert (await store.append_one(message(thread_id="alone", content="second"))).version == 2
    assert [e.version for e in await store.read_aggregate(PROJECT, "thread", "alone")] == [1, 2]
    after = await store.append_one(message(thread_id="grouped", content="last"))
    assert after.version == 6
    versions = [e.version for e in await store.read_aggregate(PROJECT, "thread", "grouped")]
    assert versions == [1, 2, 3, 4, 5, 6]
