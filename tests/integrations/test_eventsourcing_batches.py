"""Large eventsourcing batches go as one MULTI/EXEC; they leave exactly what the insert
script leaves (the same log events, indexes and notifications), and a batch whose
watched keys change before EXEC is written by the script instead, once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent, Tracking
from eventsourcing.utils import Environment
from redis import Redis

from chatlog.events import RecordedEvent, aggregate_key
from chatlog.eventstore import EventStore
from chatlog.integrations.eventsourcing import ChatlogFactory

DATASTORE = "chatlog.integrations._eventsourcing_datastore"
X, Y, Z = (uuid.UUID(int=n) for n in (1, 2, 3))


def _events(oid: uuid.UUID, first: int, count: int) -> list[StoredEvent]:
    return [StoredEvent(originator_id=oid, originator_version=v, topic=f"t:{v % 3}",
                        state=bytes([v % 256]) * v)
            for v in range(first, first + count)]


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """The outcomes of the MULTI/EXEC path (None: a watched key changed)."""
    import chatlog.integrations._eventsourcing_datastore as datastore

    outcomes: list[Any] = []
    real = datastore.multi_insert

    def recorded(*args: Any) -> Any:
        outcomes.append(real(*args))
        return outcomes[-1]

    monkeypatch.setattr(f"{DATASTORE}.multi_insert", recorded)
    yield outcomes


def _write(url: str, prefix: str) -> list[Any]:
    factory = ChatlogFactory(Environment("Bank", {"CHATLOG_REDIS_URL": url,
                                                  "CHATLOG_KEY_PREFIX": prefix}))
    try:
        process = factory.process_recorder()
        snapshots = factory.aggregate_recorder("snapshots")
        ids = [process.insert_events(_events(X, 1, 12), tracking=Tracking("Up", 3))]
        ids.append(process.insert_events(_events(Y, 1, 3)))
        ids.append(process.insert_events(_events(X, 13, 12) + _events(Y, 4, 12)))
        snapshots.insert_events(_events(Z, 1, 11))
        with pytest.raises(IntegrityError):  # version 20 of X exists: nothing is written
            process.insert_events(_events(Y, 16, 5) + _events(X, 20, 1) + _events(Y, 21, 9))
        with pytest.raises(IntegrityError):  # tracking must move forward
            process.insert_events(_events(Y, 16, 12), tracking=Tracking("Up", 3))
        notes = [(n.id, n.originator_id, n.originator_version, n.topic, n.state)
                 for n in process.select_notifications(1, 100)]
        events = [(e.originator_version, e.state) for e in snapshots.select_events(Z)]
        return [ids, notes, events, process.max_tracking_id("Up")]
    finally:
        factory.close()


def _aggregate(event: RecordedEvent) -> str:
    return aggregate_key(event.project, event.aggregate_type, event.aggregate_id)


async def _log(url: str, prefix: str) -> dict[str, Any]:
    """The log's events (without ids and positions) and how the indexes name them."""
    store = await EventStore.open(url, prefix=prefix)
    try:
        events = [e for p in range(store.partitions) for e in await store.read(p)]
        redis = Redis.from_url(url)
        try:
            project = events[0].project
            p = store.partition_of(project)
            positions = [e.position for e in events]
            index = [x[0].decode() for x in redis.xrange(store.keys.project_index(p, project))]
            assert index == positions
            for aggregate in {_aggregate(e) for e in events}:
                mine = [e for e in events if _aggregate(e) == aggregate]
                listed = redis.lrange(store.keys.aggregate_index(p, aggregate), 0, -1)
                assert [x.decode() for x in listed] == [e.position for e in mine]
                assert [e.version for e in mine] == list(range(1, len(mine) + 1))
                assert int(redis.hget(store.keys.versions(p), aggregate) or 0) == len(mine)
        finally:
            redis.close()
        return {"events": [(e.type, e.aggregate_id, e.version, e.typed_data(), e.blob)
                           for e in events]}
    finally:
        await store.close()


def test_a_transaction_leaves_what_the_script_leaves(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch, spy: list[Any]
) -> None:
    monkeypatch.setattr(f"{DATASTORE}.MULTI_MIN", 10**9)
    scripted = _write(redis_url, f"{key_prefix}s")
    assert spy == []
    monkeypatch.setattr(f"{DATASTORE}.MULTI_MIN", 1)
    assert _write(redis_url, f"{key_prefix}m") == scripted
    assert [o[0] for o in spy if o is not None] == ["ok", "ok", "ok", "ok", "conflict",
                                                     "tracking"]
    assert asyncio.run(_log(redis_url, f"{key_prefix}m")) == asyncio.run(
        _log(redis_url, f"{key_prefix}s"))


def test_a_batch_whose_keys_change_before_exec_is_written_once_by_the_script(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch, spy: list[Any]
) -> None:
    monkeypatch.setattr(f"{DATASTORE}.MULTI_MIN", 1)
    factory = ChatlogFactory(Environment("Bank", {"CHATLOG_REDIS_URL": redis_url,
                                                  "CHATLOG_KEY_PREFIX": key_prefix}))
    try:
        recorder = factory.application_recorder()
        import chatlog.integrations._eventsourcing_multi as multi

        real = multi._refused
        meddled: list[Any] = []

        def meddling(*args: Any) -> Any:
            if not meddled:  # another writer commits between the check and EXEC
                meddled.append(None)
                meddled[0] = recorder.insert_events(_events(Y, 1, 1))
            return real(*args)

        monkeypatch.setattr(multi, "_refused", meddling)
        assert recorder.insert_events(_events(X, 1, 12)) == list(range(2, 14))
        assert meddled == [[1]]
        assert spy == [("ok", [1]), None]  # the batch's EXEC did nothing: the script wrote it
        notes = recorder.select_notifications(1, 100)
        assert [(n.id, n.originator_id, n.originator_version) for n in notes] == [
            (1, Y, 1), *((i + 1, X, i) for i in range(1, 13))]
        assert [e.originator_version for e in recorder.select_events(X)] == list(range(1, 13))
    finally:
        factory.close()
    events = asyncio.run(_log(redis_url, key_prefix))["events"]
    assert len(events) == 13


def test_reads_that_go_on_from_the_last_one_read_the_same(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chatlog.integrations._eventsourcing_datastore import Datastore

    spans: list[str] = []
    real = Datastore.listed_and_span

    def spanned(self: Datastore, *args: Any) -> Any:
        spans.append(args[-1])
        return real(self, *args)

    monkeypatch.setattr(Datastore, "listed_and_span", spanned)
    factory = ChatlogFactory(Environment("Bank", {"CHATLOG_REDIS_URL": redis_url,
                                                  "CHATLOG_KEY_PREFIX": key_prefix}))
    try:
        recorder = factory.application_recorder()
        snapshots = factory.aggregate_recorder("snapshots")
        for v in range(1, 31):  # other entries between the notifications in the log
            recorder.insert_events(_events(X, v, 1))
            snapshots.insert_events(_events(Z, v, 1))

        def seen(notes: Any) -> list[Any]:
            return [(n.id, n.originator_version, n.topic, n.state) for n in notes]

        everything = seen(recorder.select_notifications(1, 100))
        assert [n[0] for n in everything] == list(range(1, 31)) and spans == []
        reader = factory.application_recorder()  # nothing read yet
        pieces = seen(reader.select_notifications(1, 12))
        pieces += seen(reader.select_notifications(13, 12))  # after 12, read before
        pieces += seen(reader.select_notifications(24, 4, inclusive_of_start=False))
        pieces += seen(reader.select_notifications(29, 10, stop=29))
        pieces += seen(reader.select_notifications(29, 10, inclusive_of_start=False))
        assert pieces == everything
        assert len(spans) == 4 and all(s.startswith("(") for s in spans)
        assert seen(reader.select_notifications(1, 12)) == everything[:12]  # from the first
        assert spans[-1] != "" and not spans[-1].startswith("(")
        assert seen(reader.select_notifications(30, 5, inclusive_of_start=False)) == []
    finally:
        factory.close()


@pytest.mark.parametrize("application", [True, False])
def test_rows_are_the_bodies_the_codec_writes(application: bool) -> None:
    from chatlog.events import EventsourcingRecorded, NewEvent
    from chatlog.eventstore.codec import encode_body
    from chatlog.integrations._eventsourcing_rows import rows
    from chatlog.integrations._runtime import digest

    events = [StoredEvent(originator_id=oid, originator_version=v, topic=topic, state=b"s")
              for oid, v, topic in ((X, 0, "t:A"), ('o"\\d/é', 7, "ünï\"code"), (X, 1, "t:A"))]
    made = rows("Bänk \"Project\"", "Bank.snap", events, application, digest, False)
    ids = {r[0] for r in made}
    assert len(ids) == 3 and all(str(uuid.UUID(i)) == i and uuid.UUID(i).version == 4
                                 for i in ids)
    for (_eid, oid, d, version, topic, head, tail, state), s in zip(made, events, strict=True):
        assert (oid, d, version, topic, state) == (
            str(s.originator_id), digest(str(s.originator_id)), s.originator_version,
            s.topic, s.state)
        nid = 12 if application else None
        event = EventsourcingRecorded(recorder="Bank.snap", originator_id=oid,
                                      originator_version=version, topic=topic,
                                      notification_id=nid)
        expected = encode_body(NewEvent.of(
            event, project=X, project_name="Bänk \"Project\"", aggregate_type="eventsourcing",
            aggregate_id="x", blob=state))
        doc = head + (b"12" if application else b"") + tail
        assert b"\x00" + len(doc).to_bytes(4, "big") + doc + state == expected


def test_a_batch_that_guesses_wrong_is_refused_by_its_guard_then_checked(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch, spy: list[Any]
) -> None:
    """A recorder's batch goes in one round trip guessing from its own last batch; another
    writer in between makes the guess wrong: the guard refuses it, nothing is written,
    and the checked path writes it."""
    monkeypatch.setattr(f"{DATASTORE}.MULTI_MIN", 1)
    factory = ChatlogFactory(Environment("Bank", {"CHATLOG_REDIS_URL": redis_url,
                                                  "CHATLOG_KEY_PREFIX": key_prefix}))
    try:
        mine, other = factory.application_recorder(), factory.application_recorder()
        assert mine.insert_events(_events(X, 1, 12)) == list(range(1, 13))  # checked
        assert mine.insert_events(_events(X, 13, 2)) == [13, 14]  # guessed, and right
        redis = Redis.from_url(redis_url)
        guard = f"{mine.base}:guard"  # type: ignore[attr-defined]
        assert redis.get(guard) is None
        assert other.insert_events(_events(X, 15, 10)) == list(range(15, 25))
        assert mine.insert_events(_events(X, 25, 3)) == [25, 26, 27]  # refused, checked
        assert redis.get(guard) == b"1"
        redis.close()
        assert spy == [("ok", ids) for ids in ([*range(1, 13)], [13, 14], [*range(15, 25)],
                                                [25, 26, 27])]
        assert [e.originator_version for e in mine.select_events(X)] == list(range(1, 28))
    finally:
        factory.close()
    events = asyncio.run(_log(redis_url, key_prefix))["events"]
    assert [e[2] for e in events] == list(range(1, 28))  # versions of the one aggregate
