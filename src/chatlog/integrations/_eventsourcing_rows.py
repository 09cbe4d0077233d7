"""The eventsourcing recorders' rows: each stored event's id and body, as
``codec.encode_body`` writes an ``EventsourcingRecorded`` event, built from
templates (a batch of 100 is a hot path: one ``orjson.dumps`` of a nested dict
and one ``random_uuid`` per event were a third of the recorder's own time)."""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Callable, Sequence

import orjson
from eventsourcing.persistence import DataError, StoredEvent

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


@functools.lru_cache(maxsize=256)
def _start(project_name: str, recorder: str) -> bytes:
    return b'{"n":%s,"d":{"recorder":%s,"originator_id":' % (
        orjson.dumps(project_name), orjson.dumps(recorder))


#: Versions are scores of a sorted set (a double): exact up to 2**53.
_MAX_VERSION = 2**53


@functools.lru_cache(maxsize=4096)
def _originator(start: bytes, originator_id: object, digest: Callable[[str], str],
                uuid_ids: bool) -> tuple[str, str, bytes]:
    """(text, digest, the JSON up to its version) of an originator id; a recorder of
    UUID ids refuses one it could not read back as a UUID (and writes a UUID's text
    the one way)."""
    if uuid_ids and not isinstance(originator_id, uuid.UUID):
        try:
            originator_id = uuid.UUID(originator_id)  # type: ignore[arg-type]
        except (TypeError, ValueError, AttributeError):
            raise DataError(
                f"originator id {originator_id!r} is not a UUID, which this recorder "
                "reads ids back as; set ORIGINATOR_ID_TYPE=text to store text ids"
            ) from None
    oid = str(originator_id)
    return oid, digest(oid), start + orjson.dumps(oid) + b',"originator_version":'


@functools.lru_cache(maxsize=1024)
def _topic(topic: str) -> bytes:
    return b',"topic":' + orjson.dumps(topic) + b',"notification_id":'


_END = b'},"s":%d}' % SCHEMA_VERSION


def rows(project_name: str, recorder: str, stored_events: Sequence[StoredEvent],
         application: bool, digest: Callable[[str], str], uuid_ids: bool) -> list[Row]:
    """One row per stored event; the body's JSON split where the notification id goes
    (an application's: the script or transaction puts it in) or whole (tail empty).

    What repeats is built once, and kept across batches (an application writes the
    same few originators and topics again and again): per recorder the JSON's start,
    per originator its text, digest and the JSON up to its version, per topic the
    JSON from the topic on."""
    start = _start(project_name, recorder)
    end = _END
    originators: dict[object, tuple[str, str, bytes]] = {}  # (this batch's: cheaper)
    topics: dict[str, bytes] = {}
    out: list[Row] = []
    for s, eid in zip(stored_events, event_ids(len(stored_events)), strict=True):
        known = originators.get(s.originator_id)
        if known is None:
            known = originators[s.originator_id] = _originator(start, s.originator_id, digest,
                                                               uuid_ids)
        version = s.originator_version
        if type(version) is not int or not -_MAX_VERSION <= version <= _MAX_VERSION:
            raise DataError(f"originator version {version!r} of {known[0]} is not an "
                            f"integer within +-2**53 (the most a version is stored exactly)")
        topic = topics.get(s.topic)
        if topic is None:
            if application and "\0" in s.topic:  # the notification list's separator
                raise DataError(f"topic {s.topic!r} contains a NUL character; an "
                                "application recorder's topics cannot")
            topic = topics[s.topic] = _topic(s.topic)
        head = known[2] + b"%d" % version + topic
        if application:
            tail = end
        else:
            head, tail = head + b"null" + end, b""
        state = s.state
        out.append((eid, known[0], known[1], version, s.topic, head, tail,
                    state if type(state) is bytes else bytes(state)))
    return out
