"""Building notifications from the notification list's elements and the log's entries."""

from __future__ import annotations

import uuid
from typing import Any

from eventsourcing.persistence import Notification

from chatlog.eventstore.codec import frame_body
from chatlog.integrations._eventsourcing_reads import Missed, Reader
from chatlog.integrations._eventsourcing_scripts import note

A, B = uuid.uuid4(), uuid.uuid4()


def _fields(position: bytes, state: bytes) -> list[bytes]:
    body = frame_body(b'{"n":"P","d":{},"s":1}', state)
    return [b"i", b"e-" + position, b"t", b"eventsourcing.recorded", b"a", b"x", b"v", b"1",
            b"b", body]


def _expected(nid: int, oid: uuid.UUID, version: int, topic: str, state: bytes) -> Notification:
    return Notification(id=nid, originator_id=oid, originator_version=version, topic=topic,
                        state=state)


def test_pick_skips_placeholders_filters_topics_and_leaves_gaps_for_missing_entries() -> None:
    members = [
        note("1-1", "t:One", 1, str(A)),
        b"",  # a placeholder: no notification 12
        note("1-3", "t:Two", 1, str(B)),
        note("1-4", "t:One", 2, str(A)),
        note("1-5", "t:One", 3, str(A)),
    ]
    span: dict[bytes, Any] = {b"1-1": _fields(b"1-1", b"s1"), b"1-5": _fields(b"1-5", b"s5")}
    reader = Reader(uuid.UUID)
    out: list[Notification | None] = []
    missed: list[tuple[int, Missed]] = []

    seen, first, last = reader.pick(members, 10, {b"t:One"}, 10, span, out, missed)

    assert seen == 5
    assert first == (11, b"1-1") and last == (15, b"1-5")
    assert out[0] == _expected(11, A, 1, "t:One", b"s1")
    assert out[1] is None and missed == [(1, (14, b"1-4", b"t:One", b"2", str(A).encode()))]
    assert out[2] == _expected(15, A, 3, "t:One", b"s5")

    # the missing entry found afterwards (in the archive, say) fills its gap
    found = frame_body(b'{"n":"P","d":{},"s":1}', b"s4")
    assert reader.fill(list(out), missed, [found]) == [
        _expected(11, A, 1, "t:One", b"s1"), _expected(14, A, 2, "t:One", b"s4"),
        _expected(15, A, 3, "t:One", b"s5")]
    # one in neither tier is left out
    assert reader.fill(list(out), missed, [None]) == [
        _expected(11, A, 1, "t:One", b"s1"), _expected(15, A, 3, "t:One", b"s5")]


def test_pick_stops_at_the_limit_and_says_how_far_it_went() -> None:
    members = [note(f"1-{k}", "t", k, str(A)) for k in range(1, 6)]
    span = {f"1-{k}".encode(): _fields(f"1-{k}".encode(), b"s%d" % k) for k in range(1, 6)}
    out: list[Notification | None] = []

    seen, first, last = Reader(str).pick(members, 0, set(), 2, span, out, [])

    assert seen == 2 and first == (1, b"1-1") and last == (2, b"1-2")
    assert out == [_expected(1, str(A), 1, "t", b"s1"),  # type: ignore[arg-type]
                   _expected(2, str(A), 2, "t", b"s2")]  # type: ignore[arg-type]
