"""Reads by position with paging, aggregate reads, retention trimming, partitions."""

from __future__ import annotations

import pytest

from chatlog.errors import InvalidInput, InvalidPosition, PartitionMismatch, PositionTrimmed
from chatlog.eventstore import Cursor, EventStore
from chatlog.identity import normalize_project_id
from tests.helpers import message


async def test_paging_by_position_sees_every_event_once(store: EventStore) -> None:
    for i in range(25):
        await store.append_one(message(content=str(i)))
    seen: list[str] = []
    after = "0-0"
    while page := await store.read(0, after, limit=7):
        seen += [e.data["content"] for e in page]
        after = page[-1].position
    assert seen == [str(i) for i in range(25)]


async def test_raw_and_flat_reads_match_the_decoded_read(store: EventStore) -> None:
    results = [await store.append_one(message(content=str(i))) for i in range(12)]
    decoded = await store.read(0, results[2].position, limit=5)
    raw = await store.read_raw(0, results[2].position, limit=5)
    flat = await store.read_flat(0, results[2].position, limit=5)
    assert [p for p, _ in raw] == [p for p, _ in flat] == [e.position.encode() for e in decoded]
    for (_, fields), (_, pairs) in zip(raw, flat, strict=True):
        assert dict(zip(pairs[::2], pairs[1::2], strict=True)) == fields
        assert pairs[4] == b"a"  # the orchestrator's scan relies on where "a" is
    assert [f[b"b"] for _, f in raw] == [p[9] for _, p in flat]
    await store.trim(0, results[5].position)
    with pytest.raises(PositionTrimmed):
        await store.read_flat(0, results[1].position)


async def test_read_aggregate_from_version_with_limit(store: EventStore) -> None:
    for i in range(10):
        await store.append_one(message(thread_id="a", content=f"a{i}"))
        await store.append_one(message(thread_id="b", content=f"b{i}"))
    key = normalize_project_id("Blog-Project").key
    events = await store.read_aggregate(key, "thread", "a", from_version=4, limit=3)
    assert [e.data["content"] for e in events] == ["a3", "a4", "a5"]
    assert [e.version for e in events] == [4, 5, 6]
    assert await store.read_aggregate(key, "thread", "missing") == []
    assert await store.aggregate_version(key, "thread", "b") == 10


async def test_reading_a_trimmed_position_is_a_clear_error(store: EventStore) -> None:
    results = [await store.append_one(message(content=str(i))) for i in range(10)]
    removed = await store.trim(0, results[5].position)
    assert removed == 5
    with pytest.raises(PositionTrimmed) as err:
        await store.read(0, results[2].position)
    assert err.value.status == 410 and "deleted" in str(err.value)
    # without a cursor, reading starts at the first event kept
    assert [e.data["content"] for e in await store.read(0)] == [str(i) for i in range(5, 10)]
    # reading from the horizon on is fine, and nothing after it is missing
    after = await store.read(0, results[4].position)
    assert [e.data["content"] for e in after] == [str(i) for i in range(5, 10)]
    key = normalize_project_id("Blog-Project").key
    with pytest.raises(PositionTrimmed):
        await store.read_aggregate(key, "thread", "thread-1")
    assert len(await store.read_aggregate(key, "thread", "thread-1", from_version=6)) == 5


async def test_bad_positions_are_clear_errors(store: EventStore) -> None:
    with pytest.raises(InvalidPosition, match="<milliseconds>-<sequence>"):
        await store.read(0, "yesterday")
    with pytest.raises(InvalidInput, match="partition 3 does not exist"):
        await store.read(3)
    with pytest.raises(InvalidPosition, match="2 positions"):
        Cursor.parse("1-0,2-0", 1)


async def test_partition_count_is_recorded_and_checked(store_factory) -> None:  # type: ignore[no-untyped-def]
    await store_factory(partitions=4)
    with pytest.raises(PartitionMismatch, match="created with 4 partitions, not 2"):
        await store_factory(partitions=2)
    again = await store_factory(partitions=4)
    assert again.partitions == 4


async def test_projects_spread_over_partitions_and_cursor_reads_them_all(store_factory) -> None:  # type: ignore[no-untyped-def]
    store = await store_factory(partitions=4)
    names = [f"project-{i}" for i in range(12)]
    for name in names:
        await store.append_one(message(project=name))
    used = {store.partition_of(normalize_project_id(n).key) for n in names}
    assert len(used) > 1
    assert "{p" in store.keys.log(3)
    events, cursor = await store.read_cursor(Cursor.start(4), limit=100)
    assert sorted(e.project_name for e in events) == sorted(names)
    assert await store.read_cursor(cursor) == ([], cursor)
    assert cursor == await store.heads()


async def test_unknown_event_types_are_readable(store: EventStore) -> None:
    from chatlog.events import NewEvent

    key = normalize_project_id("p")
    ev = NewEvent(type="future.thing", project=key.key, project_name="p", aggregate_type="thread",
                  aggregate_id="t", data={"anything": [1, 2]})
    await store.append_one(ev)
    [read] = await store.read(0)
    assert read.type == "future.thing" and read.data == {"anything": [1, 2]}
    assert read.typed_data() is None


async def test_event_round_trip(store: EventStore) -> None:
    ev = message(content="ünïcødé ✓ \"quotes\"", thread_id="t/with/slashes")
    result = await store.append_one(ev)
    [read] = await store.read(0)
    assert read.id == ev.id and read.type == ev.type and read.project == ev.project
    assert read.aggregate_id == "t/with/slashes" and read.data == ev.data
    assert read.position == result.position and read.version == 1
    assert read.typed_data() is not None


def test_a_decoded_entry_is_the_model_that_model_construct_builds() -> None:
    """decode_entry builds RecordedEvent without model_construct's per-field loop: the
    same model, field for field, fields set included, with and without a blob."""
    from chatlog.events import RecordedEvent
    from chatlog.eventstore import codec

    assert codec._PLAIN_MODEL  # no post-init, extra or root: the shortcut applies
    for blob in (None, b"\x00\x01raw"):
        ev = message(content="é" * 3)
        body = codec.encode_body(ev) if blob is None else codec.frame_body(
            codec.encode_body(ev), blob)
        fields = {b"i": str(ev.id).encode(), b"t": ev.type.encode(),
                  b"a": ev.aggregate.encode(), b"v": b"7", b"b": body}
        got = codec.decode_entry(2, b"1700000000123-4", fields)
        want = RecordedEvent.model_construct(
            id=ev.id, type=ev.type, project=ev.project, project_name=ev.project_name,
            aggregate_type=ev.aggregate_type, aggregate_id=ev.aggregate_id, version=7,
            partition=2, position="1700000000123-4", time=got.time, data=ev.data,
            schema_version=ev.schema_version, blob=blob)
        assert got == want
        assert got.model_fields_set == want.model_fields_set
        assert got.model_dump_json() == want.model_dump_json()
        assert got.time.timestamp() == 1700000000.123
        assert list(got.__dict__) == list(RecordedEvent.model_fields)


@pytest.mark.parametrize(("position", "before"), [
    ("5-3", "5-2"), ("5-0", f"4-{2**64 - 1}"), ("1-0", f"0-{2**64 - 1}"), ("0-0", "0-0"),
])
def test_the_position_just_before(position: str, before: str) -> None:
    from chatlog.eventstore.codec import parse_position, position_before

    assert position_before(position) == before
    assert parse_position(before) <= parse_position(position)
