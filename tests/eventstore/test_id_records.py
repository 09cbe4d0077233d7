"""Remembered event ids take bounded room: compact records in hash buckets, not a key per id.

Contract tests: they run on one Valkey, on Redis 7 and on the cluster.
"""

from __future__ import annotations

import uuid
from typing import Any

from chatlog.errors import EventIdReused
from chatlog.eventstore import EventStore
from chatlog.eventstore.remembered import remembered
from tests.helpers import eventually, message


async def _keys_of(store: EventStore) -> int:
    """How many keys the store's prefix holds (on every node of a cluster)."""
    pattern = f"{store.keys.prefix}:*"
    return len([k async for k in store.redis.scan_iter(match=pattern, count=1000)])


async def test_many_ids_share_buckets(store: EventStore) -> None:
    """The old layout kept a key per remembered id (~180 B each, 20,000 keys here)."""
    n = 20_000
    for start in range(0, n, 500):  # batches of 500 ids in one aggregate each
        await store.append([message(thread_id=f"t{start}", content=str(i),
                                    event_id=uuid.uuid4()) for i in range(start, start + 500)])
    keys = await _keys_of(store)
    # The old layout: a key per id, 20,000 and more. Buckets: 20,000 ids in 16,384
    # buckets fill about 11,500 of them (fewer keys per id as ids grow, down to one
    # per ~60 ids near the listpack limit); the log's own keys are a handful.
    assert keys < 0.75 * n, keys


async def test_an_id_is_deduplicated_across_a_generation_boundary(store_factory: Any) -> None:
    # A window of 2 s: a generation lasts 2 s, so the record written now is in the
    # previous generation within 2 s, and still found there for the rest of the window.
    store: EventStore = await store_factory(idempotency_window=2.0)
    event = message(event_id=uuid.uuid4(), content="hi")
    first = await store.append_one(event)
    generation = await _generation(store, 2000)

    async def next_generation() -> bool:
        return await _generation(store, 2000) > generation

    await eventually(next_generation, timeout=5.0, what="the next generation of ids")
    again = await store.append_one(message(event_id=event.id, content="hi"))
    if await _generation(store, 2000) == generation + 1:  # still within the window
        assert again.duplicate and again.position == first.position
    found = await remembered(store, first.partition, [(event.project, event.id)])
    assert found[0] is not None and found[0].kind == "i"


async def test_a_server_made_id_sent_again_by_its_client_is_a_duplicate(
        store: EventStore) -> None:
    """After a 504 the client retries with the event_id it was given (now its own)."""
    event = message(content="hi")
    first = await store.append_one(event)
    again = await store.append_one(message(event_id=event.id, content="hi"))
    assert again.duplicate and again.position == first.position
    found = await remembered(store, first.partition, [(event.project, event.id)])
    assert found[0] is not None and found[0].kind == "o"


async def test_a_reused_id_is_still_refused_from_the_previous_generation(
        store_factory: Any) -> None:
    store: EventStore = await store_factory(idempotency_window=2.0)
    event_id = uuid.uuid4()
    await store.append_one(message(event_id=event_id, content="hi"))
    generation = await _generation(store, 2000)

    async def next_generation() -> bool:
        return await _generation(store, 2000) > generation

    await eventually(next_generation, timeout=5.0, what="the next generation of ids")
    try:
        await store.append_one(message(event_id=event_id, content="other"))
    except EventIdReused:
        pass
    else:
        raise AssertionError("an id reused with other content was appended")
    assert len(await store.read(0)) == 1


async def test_the_same_id_in_two_projects_is_two_events(store: EventStore) -> None:
    event_id = uuid.uuid4()
    a = await store.append_one(message(project="alpha", event_id=event_id, content="x"))
    b = await store.append_one(message(project="beta", event_id=event_id, content="x"))
    assert not a.duplicate and not b.duplicate and a.position != b.position


async def test_ids_of_the_layout_before_buckets_are_still_deduplicated(
        store_factory: Any, key_prefix: str) -> None:
    """A log whose ids were remembered as a key each, by the version before: reopened
    by this one, an id appended before the upgrade is still a duplicate (or refused
    with other content) for the time its key has left."""
    first: EventStore = await store_factory()
    event = message(event_id=uuid.uuid4(), content="before")
    original = await first.append_one(event)
    # What the old version left: its metadata without the buckets' field, and a key
    # per id: "<position> <version>" (no digest: matches any content) or with the 24 hex
    # digits of a digest (another content's here).
    await first.redis.hdel(first.keys.meta, "ids_legacy_until")
    plain, digested = uuid.uuid4(), uuid.uuid4()
    await first.redis.set(first.keys.event_id(0, event.project, plain),
                          f"{original.position} 7", px=60_000)
    await first.redis.set(first.keys.event_id(0, event.project, digested),
                          f"{original.position} 7 {'ab' * 12}", px=60_000)
    upgraded: EventStore = await store_factory()
    dup = await upgraded.append_one(message(event_id=plain, content="before"))
    assert dup.duplicate and dup.position == original.position and dup.version == 7
    found = await remembered(upgraded, 0, [(event.project, plain)])
    assert found[0] is not None and found[0].kind == "l" and found[0].ttl_ms > 0
    try:
        await upgraded.append_one(message(event_id=digested, content="before"))
    except EventIdReused:
        pass
    else:
        raise AssertionError("an old-layout id reused with other content was appended")
    # A log created with buckets never reads the old keys.
    fresh: EventStore = await store_factory(prefix=f"{key_prefix}x")
    await fresh.redis.set(fresh.keys.event_id(0, event.project, plain), "0-1 1", px=60_000)
    assert not (await fresh.append_one(message(event_id=plain, content="before"))).duplicate


async def _generation(store: EventStore, window_ms: int) -> int:
    """The server's current generation of ids for ``window_ms`` (its clock, as the script's)."""
    node: Any = store.redis
    seconds, micros = await node.time()
    return (int(seconds) * 1000 + int(micros) // 1000) // window_ms


async def test_ids_with_one_window_for_client_and_server_ids(store_factory: Any) -> None:
    """Equal windows: client and server ids share one family of buckets (the script
    builds it once, on first use); both kinds are still found, and told apart."""
    store: EventStore = await store_factory(idempotency_window=600.0, outcome_window=600.0)
    client, server = message(event_id=uuid.uuid4(), content="a"), message(content="b")
    first = await store.append([client, server])
    again = await store.append([message(event_id=client.id, content="a"),
                                message(event_id=server.id, content="b")])
    assert [r.duplicate for r in again] == [True, True]
    assert [r.position for r in again] == [r.position for r in first]
    try:
        await store.append_one(message(event_id=server.id, content="other"))
        raise AssertionError("a reused id was appended")
    except EventIdReused:
        pass
    found = await remembered(store, first[0].partition,
                             [(client.project, client.id), (server.project, server.id)])
    assert [f is not None for f in found] == [True, True]
