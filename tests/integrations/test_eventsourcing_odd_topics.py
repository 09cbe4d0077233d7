"""A topic with a NUL character (the notification list's separator) is refused when
an application records it, with nothing written; before, it was written and every
later read of the application's notifications failed (``badly formed hexadecimal
UUID string``). Other odd topics, and reads at odd bounds, read back as written."""

from __future__ import annotations

import pytest
from eventsourcing.persistence import DataError, StoredEvent

from tests.integrations.test_eventsourcing_notes import TEXT_ID, X, _factory


@pytest.mark.parametrize("multi_min", [1, 10**9])
def test_a_nul_in_a_topic_is_refused_and_the_notifications_stay_readable(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch, multi_min: int
) -> None:
    monkeypatch.setattr("chatlog.integrations._eventsourcing_datastore.MULTI_MIN", multi_min)
    f = _factory(redis_url, key_prefix)
    try:
        recorder = f.application_recorder()
        odd = ["sp ace:Ü", "", "tab\there", "a" * 300]
        assert recorder.insert_events([
            StoredEvent(originator_id=X, originator_version=v, topic=t, state=b"s")
            for v, t in enumerate(odd, 1)]) == [1, 2, 3, 4]
        with pytest.raises(DataError):
            recorder.insert_events([
                StoredEvent(originator_id=X, originator_version=5, topic="ok", state=b"s"),
                StoredEvent(originator_id=X, originator_version=6, topic="a\0b", state=b"s")])
        assert recorder.max_notification_id() == 4
        got = recorder.select_notifications(1, 10)
        assert [(n.id, n.topic, n.originator_version) for n in got] == [
            (k, t, k) for k, t in enumerate(odd, 1)]
        assert [n.id for n in recorder.select_notifications(-5, 2)] == [1, 2]
        assert [n.id for n in recorder.select_notifications(0, 10, topics=[""])] == [2]
        assert recorder.select_notifications(1, 0) == []
        assert recorder.select_notifications(5, 10) == []
        assert recorder.select_notifications(1, 10, stop=0) == []
    finally:
        f.close()


def test_text_originator_ids_with_a_nul_read_back(redis_url: str, key_prefix: str) -> None:
    f = _factory(redis_url, key_prefix, id_type="text")
    try:
        recorder = f.application_recorder()
        recorder.insert_events([StoredEvent(originator_id=TEXT_ID, originator_version=1,
                                            topic="t", state=b"s")])
        (n,) = recorder.select_notifications(1, 10)
        assert (n.originator_id, n.topic, n.state) == (TEXT_ID, "t", b"s")
    finally:
        f.close()
