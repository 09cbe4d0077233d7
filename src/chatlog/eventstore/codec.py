"""Events to stream entries and back, and positions.

A stream entry has five fields: ``i`` event id, ``t`` type, ``a`` aggregate
key (``<project>/<type>/<id>``), ``v`` version and ``b`` the JSON body
(``n`` raw project name, ``d`` data, ``s`` schema version). The event's time is
its position's millisecond part, so it costs no field. A body with a binary
payload (``blob``) is framed: see :func:`frame_body`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson

from chatlog.errors import InvalidPosition
from chatlog.events import NewEvent, RecordedEvent
from chatlog.eventstore._decode_fast import event_uuid, position_time
from chatlog.eventstore.connection import text

POSITION_RE = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")  # ASCII digits only
#: The largest part of a stream id (milliseconds or sequence): 64 bits unsigned.
MAX_ID = 2**64 - 1
START = "0-0"


#: Where the append script puts each field in an entry's flat field list.
_FIELD_AT = {b"i": 0, b"t": 2, b"a": 4, b"v": 6, b"b": 8}


def flat_fields(flat: Sequence[bytes] | dict[bytes, bytes]) -> dict[bytes, bytes]:
    """An entry's flat field list (``[b"i", id, b"t", type, ...]``, as the server
    sends it when the reply is left unparsed) as a dict; a dict (a reply redis-py
    parsed) is returned as it is."""
    if isinstance(flat, dict):
        return flat
    return dict(zip(flat[::2], flat[1::2], strict=True))


def flat_field(flat: Sequence[bytes], name: bytes) -> bytes:
    """One field of a flat field list (``b""`` when missing): looked for where the
    append script puts it, so scanning a long log builds no dict per entry."""
    at = _FIELD_AT[name]
    if len(flat) > at + 1 and flat[at] == name:
        return flat[at + 1]
    return flat_fields(flat).get(name, b"")


#: First byte of a body that carries a blob: JSON never starts with it.
BLOB_MARK = b"\x00"


def encode_body(event: NewEvent) -> bytes:
    doc = orjson.dumps({"n": event.project_name, "d": event.data, "s": event.schema_version})
    if event.blob is None:
        return doc
    return frame_body(doc, event.blob)


def frame_body(doc: bytes, blob: bytes) -> bytes:
    """A body with a binary payload: mark, JSON length (4 bytes), JSON, raw blob.

    It stays one field ``b``, so everything that copies entries (replay,
    archive, migrate) carries the blob without knowing about it.
    """
    return BLOB_MARK + len(doc).to_bytes(4, "big") + doc + blob


def split_body(body: bytes) -> tuple[bytes, bytes | None]:
    """The JSON document of a body and its blob (None for a plain JSON body)."""
    if body[:1] != BLOB_MARK:
        return body, None
    size = int.from_bytes(body[1:5], "big")
    return body[5 : 5 + size], body[5 + size :]


def decode_entry(
    partition: int, position: bytes | str, fields: dict[bytes, bytes]
) -> RecordedEvent:
    """A stream entry as a :class:`RecordedEvent`."""
    pos = text(position)
    doc, blob = split_body(fields[b"b"])
    body: dict[str, Any] = orjson.loads(doc)
    project, aggregate_type, aggregate_id = fields[b"a"].decode().split("/", 2)
    return _recorded({
        "id": event_uuid(fields[b"i"]),
        "type": fields[b"t"].decode(),
        "project": _project_uuid(project),
        "project_name": body["n"],
        "aggregate_type": aggregate_type,
        "aggregate_id": aggregate_id,
        "version": int(fields[b"v"]),
        "partition": partition,
        "position": pos,
        "time": position_time(pos),
        "data": body["d"],
        "schema_version": body.get("s", 1),
        "blob": blob,
    })


#: How a reader turns an entry into an event, awaited (``chatlog.big_events.decode``
#: splits a big field off in the worker process).
EntryDecoder = Callable[[int, bytes | str, dict[bytes, bytes]], Awaitable[RecordedEvent]]


async def decode_here(
    partition: int, position: bytes | str, fields: dict[bytes, bytes]
) -> RecordedEvent:
    """:func:`decode_entry` as an :data:`EntryDecoder` (in this process)."""
    return decode_entry(partition, position, fields)


_RECORDED_FIELDS = tuple(RecordedEvent.model_fields)
_set_attribute = object.__setattr__
_new_recorded = RecordedEvent.__new__
# What model_construct does besides its loop over the fields, which decode_entry fills
# all of (that loop was half the cost of decoding an entry): valid while the model has
# no post-init, no extra fields kept and no root (test_read.py checks it).
_PLAIN_MODEL = (not RecordedEvent.__pydantic_post_init__
                and RecordedEvent.model_config.get("extra") != "allow"
                and not RecordedEvent.__pydantic_root_model__)


def _recorded(values: dict[str, Any]) -> RecordedEvent:
    """``RecordedEvent.model_construct(**values)`` for values of every field, in order."""
    if not _PLAIN_MODEL:  # pragma: no cover - the model grew a hook
        return RecordedEvent.model_construct(**values)
    event = _new_recorded(RecordedEvent)
    _set_attribute(event, "__dict__", values)
    _set_attribute(event, "__pydantic_fields_set__", set(_RECORDED_FIELDS))
    _set_attribute(event, "__pydantic_extra__", None)
    _set_attribute(event, "__pydantic_private__", None)
    return event


_PROJECTS: dict[str, uuid.UUID] = {}


def _project_uuid(key: str) -> uuid.UUID:
    """A project key's UUID, parsed once (a log has few projects and many events)."""
    known = _PROJECTS.get(key)
    if known is None:
        if len(_PROJECTS) >= 10_000:
            _PROJECTS.clear()
        known = _PROJECTS[key] = uuid.UUID(key)
    return known


def parse_position(text: str) -> tuple[int, int]:
    """``"<ms>-<seq>"`` as a tuple that orders like the stream does."""
    if not POSITION_RE.match(text):
        raise InvalidPosition(f"position {text!r} is not of the form <milliseconds>-<sequence>")
    ms, seq = text.split("-", 1)
    return int(ms), int(seq)


def position_before(position: str) -> str:
    """The greatest position that sorts before ``position`` (an exclusive lower bound
    that keeps it); ``0-0`` for ``0-0``."""
    ms, seq = parse_position(position)
    if seq:
        return f"{ms}-{seq - 1}"
    return f"{ms - 1}-{MAX_ID}" if ms else "0-0"


def position_after(a: str, b: str) -> bool:
    """True when position ``a`` comes after ``b``."""
    return parse_position(a) > parse_position(b)


class Cursor:
    """A position in every partition: where a multi-partition reader stands.

    Written as the partitions' positions joined by ``,`` in partition order;
    with one partition it is that partition's position, so a single-server
    deployment's cursors are plain stream ids.
    """

    __slots__ = ("positions",)

    def __init__(self, positions: list[str]) -> None:
        self.positions = positions

    @classmethod
    def start(cls, partitions: int) -> Cursor:
        return cls([START] * partitions)

    @classmethod
    def parse(cls, text: str | None, partitions: int) -> Cursor:
        if text is None or text.strip() in {"", "0", START}:
            return cls.start(partitions)
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != partitions:
            raise InvalidPosition(
                f"cursor {text!r} has {len(parts)} positions; this log has {partitions} "
                f"partitions, so it needs {partitions} separated by ','"
            )
        for p in parts:
            parse_position(p)
        return cls(parts)

    def advanced(self, partition: int, position: str) -> Cursor:
        positions = list(self.positions)
        positions[partition] = position
        return Cursor(positions)

    def __str__(self) -> str:
        return ",".join(self.positions)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cursor) and other.positions == self.positions

    def __hash__(self) -> int:
        return hash(tuple(self.positions))

    def __repr__(self) -> str:
        return f"Cursor({self})"
