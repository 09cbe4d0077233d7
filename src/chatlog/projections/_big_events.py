"""Decoding a batch for the projector, big message events in the worker process.

A message event of a legal 1 MB body of tiny values costs 25-60 ms of GIL to parse
and as much to serialize its metadata again for its row; on the projector's thread
that still stops the event loop. Such events are split in the worker process
(:mod:`chatlog.offload`): the projector gets the event without its metadata, and
the metadata as JSON bytes (an ``orjson.Fragment``, which the conversations
projection writes as it is).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from chatlog import big_events, offload
from chatlog.events import MessageAppended, RecordedEvent
from chatlog.eventstore.codec import BLOB_MARK, decode_entry

RawEntry = tuple[int, bytes, dict[bytes, bytes]]
_MESSAGE = MessageAppended.event_type.encode()


def split_message_body(body: bytes) -> tuple[bytes, bytes | None]:
    """In the worker process: a message event's body without its metadata, and the
    metadata as JSON (None when the body has none or is not an object)."""
    doc = orjson.loads(body)
    data = doc.get("d") if isinstance(doc, dict) else None
    if not isinstance(data, dict) or "metadata" not in data:
        return body, None
    metadata = orjson.dumps(data.pop("metadata"))
    return orjson.dumps(doc), metadata


def decode_batch(batch: Sequence[RecordedEvent | RawEntry]) -> list[RecordedEvent]:
    """The batch as events (``decode_entry``), big message bodies split off-process."""
    out = []
    for item in batch:
        if isinstance(item, RecordedEvent):
            out.append(item)
            continue
        partition, position, fields = item
        if big_events.big_field(fields) is not None:  # a job's big payload
            out.append(big_events.decode_sync(partition, position, fields))
            continue
        body = fields[b"b"]
        if (len(body) < offload.BIG or fields.get(b"t") != _MESSAGE
                or body[:1] == BLOB_MARK):
            out.append(decode_entry(partition, position, fields))
            continue
        small, metadata = offload.run_sync(split_message_body, body)
        event = decode_entry(partition, position, {**fields, b"b": small})
        if metadata is not None:
            fragment: Any = orjson.Fragment(metadata)
            event.data["metadata"] = fragment
        out.append(event)
    return out
