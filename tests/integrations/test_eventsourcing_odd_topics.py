"""A topic with a NUL character (the notification list's separator) is refused when
an application records it, with nothing written; before, it was written and every
later read of the application's notifications failed (``badly formed hexadecimal
UUID string``). Other odd topics, and reads at odd bounds, read back as written."""

from __future__ import annotations

import gc
import threading
import uuid
import warnings

import pytest
from eventsourcing.persistence import DataError, StoredEvent
from redis import Redis

from chatlog.integrations._eventsourcing_scripts import notifications_key
from tests.helpers import open_sockets, wait_until
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


def test_threads_writing_at_once_get_contiguous_ids_read_back_in_pages(
    redis_url: str, key_prefix: str
) -> None:
    """Many threads, batches of 1 (the script) and 12 (MULTI/EXEC) at once: ids 1..N with
    no gap or repeat, each read back once, also page by page (reads that go on from the
    last one) and by topic."""
    f = _factory(redis_url, key_prefix)
    try:
        recorder = f.application_recorder()
        given: list[int] = []
        errors: list[BaseException] = []

        def write(k: int) -> None:
            oid = uuid.uuid4()
            try:
                v = 0
                for size in (1, 12, 1, 12):
                    batch = [StoredEvent(originator_id=oid, originator_version=v + j + 1,
                                         topic=f"t{k % 2}", state=b"%d" % k)
                             for j in range(size)]
                    v += size
                    given.extend(recorder.insert_events(batch) or [])
            except BaseException as exc:  # (reported below)
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        total = 6 * 26
        assert sorted(given) == list(range(1, total + 1))
        assert recorder.max_notification_id() == total
        paged: list[int] = []
        while batch := recorder.select_notifications(len(paged) + 1, 7):
            paged += [n.id for n in batch]
        assert paged == list(range(1, total + 1))
        even = recorder.select_notifications(1, total, topics=["t0"])
        assert len(even) == total // 2 and all(n.topic == "t0" for n in even)
        assert [n.id for n in recorder.select_notifications(total, 5)] == [total]
        assert recorder.select_notifications(total, 5, inclusive_of_start=False) == []
    finally:
        f.close()


@pytest.mark.parametrize("size", [1, 12])  # the insert script; a MULTI/EXEC batch
def test_inserts_before_a_reindex_never_read_back_under_another_id(
    redis_url: str, key_prefix: str, caplog: pytest.LogCaptureFixture, size: int
) -> None:
    """An application recorded before the notification list existed (its sequence at
    3, its list empty) goes on recording before anyone runs ``reindex()``: the new
    notifications keep their ids (4...), the old ones read as nothing until the reindex
    (before, notification 4 was pushed first and read back as notification 1)."""
    f = _factory(redis_url, key_prefix)
    try:
        recorder = f.application_recorder()
        recorder.insert_events([StoredEvent(originator_id=X, originator_version=v, topic="t",
                                            state=b"old") for v in range(1, 4)])
        with Redis.from_url(redis_url) as r:  # as an application recorded before the list
            r.delete(notifications_key(f.datastore.base("Bank")))
        with caplog.at_level("WARNING"):
            upgraded = f.application_recorder()
        assert "datastore.reindex()" in caplog.text
        ids = upgraded.insert_events([
            StoredEvent(originator_id=X, originator_version=v, topic="t", state=b"new")
            for v in range(4, 4 + size)])
        assert ids == list(range(4, 4 + size))
        got = upgraded.select_notifications(1, 50)
        assert [(n.id, n.originator_version) for n in got] == [(i, i) for i in ids]
        assert f.datastore.reindex() == 3 + size
        again = f.application_recorder().select_notifications(1, 50)
        assert [(n.id, n.originator_version) for n in again] == [
            (i, i) for i in range(1, 4 + size)]
    finally:
        f.close()


def test_a_reindex_of_a_log_missing_the_last_notifications_keeps_later_ids(
    redis_url: str, key_prefix: str
) -> None:
    """The sequence gave 1..5 but the log holds the events of 1..3 only (as after a
    copy that lost the last ones): the rebuilt list reaches 5, so notification 6 is
    read back as 6 (before, it was the list's 4th element: read back as 4)."""
    f = _factory(redis_url, key_prefix)
    try:
        recorder = f.application_recorder()
        recorder.insert_events([StoredEvent(originator_id=X, originator_version=v, topic="t",
                                            state=b"") for v in range(1, 4)])
        with Redis.from_url(redis_url) as r:
            r.incrby(f"{f.datastore.base('Bank')}:seq", 2)
        assert f.datastore.reindex() == 3
        (six,) = recorder.insert_events([StoredEvent(originator_id=X, originator_version=4,
                                                     topic="t", state=b"")])
        assert six == 6
        got = recorder.select_notifications(1, 10)
        assert [(n.id, n.originator_version) for n in got] == [(1, 1), (2, 2), (3, 3), (6, 4)]
    finally:
        f.close()


def test_an_insert_while_reindex_runs_keeps_its_id(redis_url: str, key_prefix: str) -> None:
    """An application records while ``reindex()`` rebuilds its list (after the rebuild
    read the log): the insert is kept, and the ids given after it stay in place (before,
    the rebuild deleted it from the list and every later id read back one place off)."""
    f = _factory(redis_url, key_prefix)
    try:
        recorder = f.application_recorder()
        recorder.insert_events([StoredEvent(originator_id=X, originator_version=v, topic="t",
                                            state=b"") for v in range(1, 4)])
        ds = f.datastore
        real_run, inserted = ds.run, []

        def run(coro):  # type: ignore[no-untyped-def]
            got = real_run(coro)
            if got == [] and not inserted:  # the rebuild read the whole log: record now
                inserted.append(recorder.insert_events([StoredEvent(
                    originator_id=X, originator_version=4, topic="t", state=b"")]))
            return got

        ds.run = run  # type: ignore[method-assign]
        ds.reindex()
        ds.run = real_run  # type: ignore[method-assign]
        assert inserted == [[4]]
        assert recorder.insert_events([StoredEvent(originator_id=X, originator_version=5,
                                                   topic="t", state=b"")]) == [5]
        got = recorder.select_notifications(1, 10)
        assert [(n.id, n.originator_version) for n in got] == [(i, i) for i in range(1, 6)]
    finally:
        f.close()


def test_close_closes_every_connection_it_opened(redis_url: str, key_prefix: str) -> None:
    """The datastore's redis-py client was given its pool, and redis-py then leaves the
    pool's sockets open on close(): they were closed by the garbage collector, with a
    ResourceWarning, whenever it came by."""
    before = open_sockets()
    f = _factory(redis_url, key_prefix)
    try:
        recorder = f.application_recorder()
        recorder.insert_events([StoredEvent(originator_id=X, originator_version=v, topic="t",
                                            state=b"") for v in range(1, 4)])
        assert f.datastore.reindex() == 3  # uses the redis-py client's pool
    finally:
        f.close()
    assert open_sockets() == before


def test_an_application_dropped_unclosed_releases_its_thread_and_connections(
        redis_url: str, key_prefix: str) -> None:
    """eventsourcing's own application tests never close their applications. One
    dropped used to keep its loop thread and its connections for the life of the
    process, until the collector met a connection and warned of it unclosed."""
    def loop_threads() -> int:
        return sum(t.name == "chatlog-eventsourcing" for t in threading.enumerate())

    gc.collect()
    threads, before = loop_threads(), open_sockets()
    f = _factory(redis_url, key_prefix)
    recorder = f.application_recorder()
    recorder.insert_events([StoredEvent(originator_id=X, originator_version=1, topic="t",
                                        state=b"")])
    assert f.datastore.reindex() == 1  # the async client's connections are open too
    assert loop_threads() == threads + 1
    del f, recorder
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
        wait_until(lambda: loop_threads() == threads and open_sockets() == before,
                   what="the dropped application's thread and sockets closed")
        gc.collect()
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []


@pytest.mark.parametrize("multi_min", [1, 10**9])
@pytest.mark.parametrize("odd_id", ["dog-1", "a\0b", 12345])
def test_an_originator_id_the_recorder_cannot_read_back_is_refused(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch, multi_min: int,
    odd_id: object,
) -> None:
    """With ORIGINATOR_ID_TYPE uuid (the default), a text id was written, and every
    later read of the application's notifications failed ("badly formed hexadecimal
    UUID string"): a follower stuck for good. It is a DataError, nothing written."""
    monkeypatch.setattr("chatlog.integrations._eventsourcing_datastore.MULTI_MIN", multi_min)
    f = _factory(redis_url, key_prefix)
    try:
        recorder = f.application_recorder()
        assert recorder.insert_events([StoredEvent(originator_id=X, originator_version=1,
                                                   topic="t", state=b"s")]) == [1]
        with pytest.raises(DataError, match="ORIGINATOR_ID_TYPE"):
            recorder.insert_events([
                StoredEvent(originator_id=X, originator_version=2, topic="t", state=b"s"),
                StoredEvent(originator_id=odd_id, originator_version=1, topic="t",  # type: ignore[arg-type]
                            state=b"s")])
        assert [n.id for n in recorder.select_notifications(1, 10)] == [1]
        assert [e.originator_version for e in recorder.select_events(X)] == [1]
        # a UUID given as text is the same originator
        assert recorder.insert_events([StoredEvent(originator_id=str(X), originator_version=2,
                                                   topic="t", state=b"s")]) == [2]
        assert [e.originator_version for e in recorder.select_events(X)] == [1, 2]
    finally:
        f.close()


def test_versions_and_bounds_beyond_what_is_stored_exactly(redis_url: str,
                                                           key_prefix: str) -> None:
    """A version beyond 2**53 would lose digits in the versions' sorted set (a conflict
    missed or invented): a DataError. Reads from beyond any notification id are empty
    (they were a raw ResponseError)."""
    f = _factory(redis_url, key_prefix)
    try:
        recorder = f.application_recorder()
        for version in (2**53 + 1, -(2**53) - 1, 2**70):
            with pytest.raises(DataError, match="version"):
                recorder.insert_events([StoredEvent(originator_id=X, originator_version=version,
                                                    topic="t", state=b"s")])
        assert recorder.insert_events([StoredEvent(originator_id=X, originator_version=2**53,
                                                   topic="t", state=b"s")]) == [1]
        assert recorder.select_notifications(2**70, 10) == []
        assert [n.id for n in recorder.select_notifications(1, 10, stop=2**70)] == [1]
        assert recorder.select_notifications(1, 2**70)[0].originator_version == 2**53
    finally:
        f.close()
