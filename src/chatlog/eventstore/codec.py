"""Events to stream entries and back, and positions.

A stream entry has five fields: ``i`` event id, ``t`` type, ``a`` aggregate
key (``<project>/<type>/<id>``), ``v`` version and ``b`` the JSON body
(``n`` raw project name, ``d`` data, ``s`` schema version). The event's time is
its position's millisecond part, so it costs no field.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any

import orjson

from chatlog.errors import InvalidPosition
from chatlog.events import NewEvent, RecordedEvent, position_time
from chatlog.eventstore.connection import text

POSITION_RE = re.compile(r"^\d{1,20}-\d{1,20}$")
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


def encode_body(event: NewEvent) -> bytes:
    return orjson.dumps({"n": event.project_name, "d": event.data, "s": event.schema_version})


def decode_entry(
    partition: int, position: bytes | str, fields: dict[bytes, bytes]
) -> RecordedEvent:
    """A stream entry as a :class:`RecordedEvent`."""
    pos = text(position)
    body: dict[str, Any] = orjson.loads(fields[b"b"])
    project, aggregate_type, aggregate_id = fields[b"a"].decode().split("/", 2)
    return RecordedEvent.model_construct(
        id=uuid.UUID(fields[b"i"].decode()),
        type=fields[b"t"].decode(),
        project=uuid.UUID(project),
        project_name=body["n"],
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        version=int(fields[b"v"]),
        partition=partition,
        position=pos,
        time=position_time(pos),
        data=body["d"],
        schema_version=body.get("s", 1),
    )


def parse_position(text: str) -> tuple[int, int]:
    """``"<ms>-<seq>"`` as a tuple that orders like the stream does."""
    if not POSITION_RE.match(text):
        raise InvalidPosition(f"position {text!r} is not of the form <milliseconds>-<sequence>")
    ms, seq = text.split("-", 1)
    return int(ms), int(seq)


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
