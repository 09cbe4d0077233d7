"""What an append sends per event, built in one pass (the append path's hot loop).

Per event the script needs its id (text), its id record
(:func:`.idempotency.record_of`), its type and its body. Built here with
nothing done twice: the project's 16 bytes once per append, the content digest
as the 8 raw bytes the record keeps (not hex, decoded again), the record from
bytes at hand.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson

from chatlog.events import NewEvent
from chatlog.eventstore.codec import encode_body
from chatlog.eventstore.idempotency import digest8, record_of

_SORT = orjson.OPT_SORT_KEYS
_CLIENT, _SERVER = b"i", b"o"
_UUID = uuid.UUID


class AppendResult(NamedTuple):
    """What the log assigned to one appended event (immutable; read its fields by name)."""

    event_id: str
    partition: int
    position: str
    version: int
    #: True when the event id was appended before: nothing new was written.
    duplicate: bool = False


def content_hash(type_: str, aggregate: str, schema_version: int,
                 data: dict[str, Any]) -> hashlib.blake2b:
    """The BLAKE2b (12 bytes) of what makes two appends with one event id the same
    event; one buffer hashed once (the same bytes, so the same digest, as one update
    per part)."""
    head = f"{type_}\0{aggregate}\0{schema_version}\0".encode()
    return hashlib.blake2b(head + orjson.dumps(data, option=_SORT), digest_size=12)


def event_args(events: Sequence[NewEvent], aggregate: str, project_bytes: bytes,
               digests: Sequence[str] | None, args: list[Any]) -> list[str]:
    """Add the 4 arguments of each event to ``args``; the events' ids as text.
    ``project_bytes``: the events' project's 16 bytes."""
    ids: list[str] = []
    blake2b = hashlib.blake2b
    dumps = orjson.dumps
    for i, ev in enumerate(events):
        eid = ev.id
        event_id = str(eid)
        ids.append(event_id)
        if digests is None:  # content_hash inlined: the hot loop
            head = f"{ev.type}\0{aggregate}\0{ev.schema_version}\0".encode()
            digest = blake2b(head + dumps(ev.data, option=_SORT), digest_size=12).digest()[:8]
        else:
            digest = digest8(digests[i])
        rec = record_of(project_bytes, eid.bytes if type(eid) is _UUID else bytes16(eid),
                        digest, _CLIENT if ev.id_supplied else _SERVER)
        args += (event_id, rec, ev.type, encode_body(ev))
    return ids


def bytes16(value: object) -> bytes:
    """A UUID's 16 bytes, also of one given as text (or of another UUID class)."""
    raw = getattr(value, "bytes", None)
    return raw if isinstance(raw, bytes) else uuid.UUID(str(value)).bytes


def results(ids: list[str], partition: int, reply: list[Any],
            duplicate: bool) -> list[AppendResult]:
    """The results of an append from its ``ok``/``dup`` reply (position, version per event)."""
    new = tuple.__new__
    if len(ids) == 1:  # append_one: no zip, no comprehension
        return [new(AppendResult, (ids[0], partition, reply[1].decode(), int(reply[2]),
                                   duplicate))]
    return [new(AppendResult, (event_id, partition, pos.decode(), int(version), duplicate))
            for event_id, pos, version in zip(ids, reply[1::2], reply[2::2], strict=False)]
