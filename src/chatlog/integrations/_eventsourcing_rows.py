"""The eventsourcing recorders' rows: each stored event's id and body, as
``codec.encode_body`` writes an ``EventsourcingRecorded`` event, built from
templates (a batch of 100 is a hot path: one ``orjson.dumps`` of a nested dict
and one ``random_uuid`` per event were a third of the recorder's own time)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import orjson
from eventsourcing.persistence import StoredEvent

from chatlog.events import SCHEMA_VERSION
from chatlog.integrations._eventsourcing_multi import Row

#: the variant bits (10xx) of a version 4 UUID's 17th hex digit
_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


def event_ids(n: int) -> list[str]:
    """``n`` random (version 4) UUIDs as text, from one ``os.urandom`` call."""
    raw = os.urandom(16 * n).hex()
    out = []
    for k in range(0, 32 * n, 32):
        h = raw[k:k + 32]
        out.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}")
    return out


def rows(project_name: str, recorder: str, stored_events: Sequence[StoredEvent],
         application: bool, digest: Callable[[str], str]) -> list[Row]:
    """One row per stored event; the body's JSON split where the notification id goes
    (an application's: the script or transaction puts it in) or whole (tail empty)."""
    start = b'{"n":%s,"d":{"recorder":%s,"originator_id":' % (
        orjson.dumps(project_name), orjson.dumps(recorder))
    end = b'},"s":%d}' % SCHEMA_VERSION
    originators: dict[str, tuple[bytes, str]] = {}
    topics: dict[str, bytes] = {}
    out: list[Row] = []
    for s, eid in zip(stored_events, event_ids(len(stored_events)), strict=True):
        oid = str(s.originator_id)
        known = originators.get(oid)
        if known is None:
            known = originators[oid] = (orjson.dumps(oid), digest(oid))
        topic = topics.get(s.topic)
        if topic is None:
            topic = topics[s.topic] = orjson.dumps(s.topic)
        head = b'%s%s,"originator_version":%d,"topic":%s,"notification_id":' % (
            start, known[0], s.originator_version, topic)
        if application:
            tail = end
        else:
            head, tail = head + b"null" + end, b""
        out.append((eid, oid, known[1], s.originator_version, s.topic, head, tail,
                    bytes(s.state)))
    return out
