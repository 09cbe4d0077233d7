"""An event id's identity is (project, event id), whatever the partition count or
topology (issue 15 #7, team decision 4); other content under a used id is refused
(issue 14). Runs on one server, on Redis 7 and on the cluster."""

from __future__ import annotations

import uuid

import pytest

from chatlog.errors import EventIdReused
from tests.helpers import message


@pytest.mark.parametrize("partitions", [1, 4])
async def test_the_same_event_id_means_the_same_thing_at_any_partition_count(
    store_factory, partitions: int
) -> None:
    store = await store_factory(partitions=partitions)
    event_id = uuid.uuid4()
    in_a = await store.append_one(message("Project-A", event_id=event_id))
    # Another project: another event, even where both projects share a partition.
    in_b = await store.append_one(message("Project-B", event_id=event_id))
    assert not in_a.duplicate and not in_b.duplicate
    assert (in_b.partition, in_b.position) != (in_a.partition, in_a.position)
    # The same project: a retry of the same event is the original answer...
    again = await store.append_one(message("Project-A", event_id=event_id))
    assert again.duplicate and (again.position, again.version) == (in_a.position, in_a.version)
    # ... and other content under that id is refused, not silently dropped.
    with pytest.raises(EventIdReused, match=str(event_id)):
        await store.append_one(message("Project-A", content="other", event_id=event_id))
    logged = [e for p in range(partitions) for e in await store.read(p)]
    assert sorted(str(e.project) for e in logged if e.id == event_id) == sorted(
        {str(message("Project-A").project), str(message("Project-B").project)})


async def test_server_made_ids_are_deduplicated_too(store_factory) -> None:
    """Every append has an id the log remembers, so an unanswered append can be resent
    (by the store, or by a client given the id in a 504) without landing twice."""
    store = await store_factory()
    first = await store.append_one(message())  # no client id: the server made one
    event = message(event_id=uuid.UUID(first.event_id))
    again = await store.append_one(event)
    assert again.duplicate and again.position == first.position
    assert len(await store.read(0)) == 1
