"""The eventsourcing recorders' notification list: element ``k - 1`` is notification
``k`` (``position NUL topic NUL version NUL originator id``), written alike by the
insert script, the MULTI/EXEC batch and ``reindex``; reads take all but the state
from it (topics and ``stop`` too)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import Environment
from redis import Redis

from chatlog.eventstore import EventStore
from chatlog.eventstore.migration import migrate
from chatlog.integrations._eventsourcing_scripts import note, notifications_key
from chatlog.integrations.eventsourcing import ChatlogFactory

X = uuid.UUID(int=7)
TEXT_ID = "an id\0with a NUL and spaces"


def _factory(url: str, prefix: str, id_type: str = "uuid") -> ChatlogFactory:
    return ChatlogFactory(Environment("Bank", {"CHATLOG_REDIS_URL": url,
                                               "CHATLOG_KEY_PREFIX": prefix,
                                               "ORIGINATOR_ID_TYPE": id_type}))


def _listed(url: str, factory: ChatlogFactory) -> list[bytes]:
    key = notifications_key(factory.datastore.base("Bank"))  # (the application's recorder)
    with Redis.from_url(url) as r:
        return list(r.lrange(key, 0, -1))


@pytest.mark.parametrize("multi_min", [1, 10**9])
def test_the_list_holds_each_notification_at_its_id(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch, multi_min: int
) -> None:
    monkeypatch.setattr("chatlog.integrations._eventsourcing_datastore.MULTI_MIN", multi_min)
    f = _factory(redis_url, key_prefix)
    try:
        recorder = f.application_recorder()
        events = [StoredEvent(originator_id=X, originator_version=v, topic=f"t:{v % 2}",
                              state=b"s%d" % v) for v in range(1, 13)]
        assert recorder.insert_events(events) == list(range(1, 13))
        listed = _listed(redis_url, f)
        assert len(listed) == 12
        for k, element in enumerate(listed):
            position = element.split(b"\0", 1)[0]
            assert element == note(position, f"t:{(k + 1) % 2}", k + 1, str(X))
        odd = recorder.select_notifications(2, 4, topics=["t:1"])
        assert [(n.id, n.originator_version, n.state) for n in odd] == [
            (3, 3, b"s3"), (5, 5, b"s5"), (7, 7, b"s7"), (9, 9, b"s9")]
        assert [n.id for n in recorder.select_notifications(4, 10, stop=6)] == [4, 5, 6]
        assert [n.id for n in recorder.select_notifications(12, 10, stop=11)] == []
        assert recorder.select_notifications(13, 10) == []
    finally:
        f.close()


def test_reindex_rebuilds_the_list_as_written(redis_url: str) -> None:
    a, b = f"a{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}"
    f = _factory(redis_url, a, "text")
    try:
        recorder = f.application_recorder()
        recorder.insert_events([StoredEvent(originator_id=TEXT_ID, originator_version=v,
                                            topic="t", state=b"%d" % v) for v in range(3)])
        recorder.insert_events([StoredEvent(originator_id="o2", originator_version=0,
                                            topic="u", state=b"")])
        written = _listed(redis_url, f)
        notes = recorder.select_notifications(1, 10)
        assert [(n.id, n.originator_id, n.originator_version, n.topic) for n in notes] == [
            (1, TEXT_ID, 0, "t"), (2, TEXT_ID, 1, "t"), (3, TEXT_ID, 2, "t"), (4, "o2", 0, "u")]
    finally:
        f.close()

    async def copy() -> None:
        source = await EventStore.open(redis_url, prefix=a)
        target = await EventStore.open(redis_url, prefix=b)
        try:
            await migrate(source, target)
        finally:
            await source.close()
            await target.close()

    asyncio.run(copy())
    g = _factory(redis_url, b, "text")
    try:
        assert g.datastore.reindex() == 4
        assert g.datastore.reindex() == 4  # idempotent
        rebuilt = _listed(redis_url, g)
        assert [e.split(b"\0", 1)[1] for e in rebuilt] == [
            e.split(b"\0", 1)[1] for e in written]  # (positions are the target log's)
        assert g.application_recorder().select_notifications(1, 10) == notes
    finally:
        g.close()


def test_a_recorder_says_when_its_list_lacks_notifications(
    redis_url: str, key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    f = _factory(redis_url, key_prefix)
    try:
        recorder = f.application_recorder()
        recorder.insert_events([StoredEvent(originator_id=X, originator_version=v, topic="t",
                                            state=b"") for v in range(1, 4)])
        assert "reindex" not in caplog.text
        with Redis.from_url(redis_url) as r:  # as an application recorded before the list
            r.delete(notifications_key(f.datastore.base("Bank")))
        with caplog.at_level("WARNING"):
            assert f.application_recorder().select_notifications(1, 10) == []
        assert "holds 0 of the 3 notification ids" in caplog.text
        assert "datastore.reindex()" in caplog.text
        caplog.clear()
        assert f.datastore.reindex() == 3
        with caplog.at_level("WARNING"):
            again = f.application_recorder()
        assert caplog.text == ""
        assert [n.id for n in again.select_notifications(1, 10)] == [1, 2, 3]
    finally:
        f.close()
