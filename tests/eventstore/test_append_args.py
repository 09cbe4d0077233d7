"""An append's per-event arguments and the script's per-call names (made on first use):
what one group commit mixing first tries, lookups and a project's first record decides."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from chatlog.errors import EventIdReused
from chatlog.eventstore import AppendResult, EventStore
from chatlog.eventstore._append import content_digest
from chatlog.eventstore._append_args import event_args
from chatlog.eventstore.idempotency import record
from chatlog.identity import normalize_project_id
from tests.helpers import message


async def test_one_group_commit_mixing_first_tries_and_lookups_decides_each(
        store: EventStore) -> None:
    known = uuid.uuid4()
    original = await store.append_one(message(event_id=known, content="a"))
    fresh = uuid.uuid4()
    # The first append goes alone; the rest go in one script call, in order: a new
    # project's first record (a server-made id: its number assigned, no filter read),
    # then ids looked up in it and in the first project, one repeated within the call.
    results = await asyncio.gather(
        store.append_one(message(thread_id="alone")),
        store.append_one(message("Other-Project", thread_id="o1")),
        store.append_one(message("Other-Project", thread_id="o2", event_id=fresh)),
        store.append_one(message("Other-Project", thread_id="o2", event_id=fresh)),
        store.append_one(message(event_id=known, content="a")),
        store.append_one(message(event_id=known, content="other")),
        return_exceptions=True)
    alone, first, new, again, same, other = results
    assert isinstance(alone, AppendResult) and isinstance(first, AppendResult)
    assert not alone.duplicate and not first.duplicate and first.version == 1
    assert isinstance(new, AppendResult) and not new.duplicate
    assert again == AppendResult(str(fresh), new.partition, new.position, new.version, True)
    assert isinstance(same, AppendResult) and same.duplicate
    assert (same.position, same.version) == (original.position, original.version)
    assert isinstance(other, EventIdReused)
    assert [e.aggregate_id for e in await store.read(0)] == ["thread-1", "alone", "o1", "o2"]


def test_event_args_keep_the_content_digest_of_content_digest() -> None:
    event = message(content="x")
    project = normalize_project_id("Blog-Project").key
    args: list[object] = []
    ids = event_args([event], event.aggregate, project.bytes, None, args)
    given: list[object] = []
    event_args([event], event.aggregate, project.bytes, [content_digest(event)], given)
    assert ids == [str(event.id)] and args == given
    record = args[1]
    assert isinstance(record, bytes) and record[3:11] == bytes.fromhex(
        content_digest(event)[:16])


def test_an_append_result_cannot_be_changed() -> None:
    result = AppendResult("id", 0, "1-1", 1)
    assert (result.event_id, result.partition, result.position, result.version,
            result.duplicate) == ("id", 0, "1-1", 1, False)
    with pytest.raises(AttributeError):
        result.version = 2  # type: ignore[misc]


async def test_an_event_whose_ids_are_text_is_appended_as_before(store: EventStore) -> None:
    # an event-like object with its ids as text (as bulk loaders build them): the record
    # takes the UUIDs' bytes of the text
    event = message(content="text ids", event_id=uuid.uuid4())
    as_text = event.model_copy(update={"id": str(event.id)})
    (result,) = await store.append([as_text])
    assert result.event_id == str(event.id) and not result.duplicate
    (again,) = await store.append([event])
    assert again.duplicate and again.position == result.position


def test_event_args_make_the_records_idempotency_makes() -> None:
    """event_args builds each record inline: the bytes of ``idempotency.record``."""
    project = normalize_project_id("Blog-Project").key
    for event in (message(content="x"), message(content="y", event_id=uuid.uuid4())):
        args: list[object] = []
        event_args([event], event.aggregate, project.bytes, None, args)
        assert args[1] == record(project, event.id, content_digest(event), event.id_supplied)
