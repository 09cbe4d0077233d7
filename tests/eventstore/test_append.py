"""Atomic appends: expected versions, idempotency by event id, all-or-nothing batches."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from chatlog.errors import EventIdReused, IdempotencyConflict, InvalidInput, VersionConflict
from chatlog.eventstore import EventStore, parse_position
from chatlog.eventstore.remembered import remembered
from chatlog.identity import normalize_project_id
from tests.helpers import eventually, message


async def test_append_assigns_version_position_and_time(store: EventStore) -> None:
    r1 = await store.append_one(message(content="one"))
    r2 = await store.append_one(message(content="two"))
    assert (r1.version, r2.version) == (1, 2)
    assert parse_position(r1.position) < parse_position(r2.position)
    events = await store.read(0)
    assert [e.data["content"] for e in events] == ["one", "two"]
    assert [e.position for e in events] == [r1.position, r2.position]
    assert events[0].time.year >= 2024


async def test_fifty_concurrent_appends_with_the_same_expected_version(store: EventStore) -> None:
    results = await asyncio.gather(
        *(store.append_one(message(content=str(i)), expected_version=0) for i in range(50)),
        return_exceptions=True,
    )
    wins = [r for r in results if not isinstance(r, BaseException)]
    conflicts = [r for r in results if isinstance(r, VersionConflict)]
    assert len(wins) == 1 and len(conflicts) == 49
    assert all(c.current == 1 and c.expected == 0 for c in conflicts)
    assert "current version is 1" in str(conflicts[0])
    assert len(await store.read(0)) == 1


async def test_conflict_names_the_current_version(store: EventStore) -> None:
    await store.append([message(content="a"), message(content="b")])
    with pytest.raises(VersionConflict) as err:
        await store.append_one(message(), expected_version=1)
    assert err.value.current == 2 and err.value.expected == 1
    assert (await store.append_one(message(), expected_version=2)).version == 3


async def test_retried_append_with_same_event_id_adds_nothing(store: EventStore) -> None:
    event_id = uuid.uuid4()
    first = await store.append_one(message(event_id=event_id))
    again = await store.append_one(message(event_id=event_id))
    assert again.duplicate and not first.duplicate
    assert (again.position, again.version) == (first.position, first.version)
    # The same id with other content is another event under a reused id: refused.
    with pytest.raises(EventIdReused):
        await store.append_one(message(content="changed", event_id=event_id))
    assert len(await store.read(0)) == 1


async def test_concurrent_retries_with_same_event_id_leave_one_event(store: EventStore) -> None:
    event_id = uuid.uuid4()
    results = await asyncio.gather(*(store.append_one(message(event_id=event_id))
                                     for _ in range(30)))
    assert len({r.position for r in results}) == 1
    assert sum(not r.duplicate for r in results) == 1
    assert len(await store.read(0)) == 1


async def test_retry_ignores_expected_version(store: EventStore) -> None:
    event_id = uuid.uuid4()
    first = await store.append_one(message(event_id=event_id), expected_version=0)
    await store.append_one(message())
    again = await store.append_one(message(event_id=event_id), expected_version=0)
    assert again.duplicate and again.position == first.position


async def test_batch_is_all_or_nothing(store: EventStore) -> None:
    await store.append_one(message())
    batch = [message(content=str(i)) for i in range(5)]
    with pytest.raises(VersionConflict):
        await store.append(batch, expected_version=0)
    assert len(await store.read(0)) == 1
    results = await store.append(batch, expected_version=1)
    assert [r.version for r in results] == [2, 3, 4, 5, 6]
    assert len(await store.read(0)) == 6


async def test_batch_retry_returns_the_original_results(store: EventStore) -> None:
    batch = [message(content=str(i), event_id=uuid.uuid4()) for i in range(3)]
    first = await store.append(batch)
    again = await store.append(batch)
    assert [r.position for r in again] == [r.position for r in first]
    assert all(r.duplicate for r in again)
    assert len(await store.read(0)) == 3


async def test_batch_partly_seen_before_is_refused(store: EventStore) -> None:
    old = message(event_id=uuid.uuid4())
    await store.append_one(old)
    with pytest.raises(IdempotencyConflict):
        await store.append([old, message(event_id=uuid.uuid4())])
    assert len(await store.read(0)) == 1


async def test_batch_must_be_one_aggregate(store: EventStore) -> None:
    with pytest.raises(InvalidInput, match="one aggregate"):
        await store.append([message(thread_id="a"), message(thread_id="b")])
    assert await store.read(0) == []


async def test_idempotency_window_expires(store_factory) -> None:  # type: ignore[no-untyped-def]
    store = await store_factory(idempotency_window=0.2)
    event_id = uuid.uuid4()
    event = message(event_id=event_id)
    first = await store.append_one(event)

    async def expired() -> bool:
        return await remembered(store, first.partition, [(event.project, event_id)]) == [None]

    await eventually(expired, what="the event id's record expiring")
    again = await store.append_one(message(event_id=event_id))
    assert not again.duplicate
    assert len(await store.read(0)) == 2


async def test_seed_test_2_case_insensitive_project_at_store_level(store: EventStore) -> None:
    await store.append_one(message(project="Blog-Project", thread_id="t", content="hi"))
    await store.append_one(message(project="blog-project", thread_id="t", content="again"))
    key = normalize_project_id("BLOG-PROJECT").key
    events = await store.read_aggregate(key, "thread", "t")
    assert [e.data["content"] for e in events] == ["hi", "again"]
    assert [e.version for e in events] == [1, 2]
    assert events[0].project_name == "Blog-Project"


async def test_seed_test_3_generated_thread_groups_messages(store: EventStore) -> None:
    from chatlog.identity import normalize_thread_id

    thread_id, created = normalize_thread_id("null")
    assert created and thread_id.startswith("thread-")
    await store.append_one(message(thread_id=thread_id, content="first"))
    same, created_again = normalize_thread_id(thread_id)
    assert same == thread_id and not created_again
    await store.append_one(message(thread_id=same, content="second"))
    await store.append_one(message(thread_id="other", content="elsewhere"))
    key = normalize_project_id("Blog-Project").key
    events = await store.read_aggregate(key, "thread", thread_id)
    assert [e.data["content"] for e in events] == ["first", "second"]
