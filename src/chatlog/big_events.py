"""Workflow events with a big field (a job's ``payload``, a workflow's ``input`` at
create or start, its ``result``),
built and decoded without parsing or serializing that field in the event loop's
process (issue 15 #9).

Built: a field whose value is an ``orjson.Fragment`` (JSON parsed and checked in
the worker process, :mod:`chatlog.offload`) goes into the event's data as it is.
Decoded: an entry whose body is big is split in the worker process; the event
gets the field as a Fragment, which orjson writes as it is wherever it goes next
(the job stream, a projection's row, an HTTP answer).
"""

from __future__ import annotations

from typing import Any

import orjson

from chatlog import offload
from chatlog.events import (
    EventData,
    JobEnqueued,
    RecordedEvent,
    WorkflowCompleted,
    WorkflowCreated,
    WorkflowStarted,
)
from chatlog.eventstore.codec import BLOB_MARK, decode_entry
from chatlog.json_values import write_json

#: Event type -> its field that may hold a big JSON value.
BIG_FIELDS = {JobEnqueued.event_type.encode(): "payload",
              WorkflowCreated.event_type.encode(): "input",
              WorkflowStarted.event_type.encode(): "input",
              WorkflowCompleted.event_type.encode(): "result"}


def data_of(data: EventData) -> dict[str, Any]:
    """``data.model_dump(mode="json")``, with its Fragment fields kept as they are."""
    fragments = {name: value for name, value in vars(data).items()
                 if isinstance(value, orjson.Fragment)}
    if not fragments:
        return data.model_dump(mode="json")
    return {**data.model_dump(mode="json", exclude=set(fragments)), **fragments}


def big_field(fields: dict[bytes, bytes]) -> str | None:
    """The field to split off an entry's body, or None when it is decoded as usual."""
    body = fields[b"b"]
    if len(body) < offload.BIG or body[:1] == BLOB_MARK:
        return None
    return BIG_FIELDS.get(fields.get(b"t", b""))


def split_body(body: bytes, name: str) -> tuple[bytes, bytes | None]:
    """In the worker process: the body without data field ``name``, and the field's
    JSON (keys sorted, as content digests hash it); None when there is no such field."""
    doc = orjson.loads(body)
    data = doc.get("d") if isinstance(doc, dict) else None
    if not isinstance(data, dict) or name not in data:
        return body, None
    value = write_json(data.pop(name), sort_keys=True)
    return write_json(doc), value


def _joined(partition: int, position: bytes | str, fields: dict[bytes, bytes], name: str,
            split: tuple[bytes, bytes | None]) -> RecordedEvent:
    small, value = split
    event = decode_entry(partition, position, {**fields, b"b": small})
    if value is not None:
        fragment: Any = orjson.Fragment(value)
        event.data[name] = fragment
    return event


def decode_sync(partition: int, position: bytes | str,
                fields: dict[bytes, bytes]) -> RecordedEvent:
    """``decode_entry``, a big field split off in the worker process (blocking: for
    a thread off the event loop)."""
    name = big_field(fields)
    if name is None:
        return decode_entry(partition, position, fields)
    split = offload.run_sync(split_body, fields[b"b"], name)
    return _joined(partition, position, fields, name, split)


async def decode(partition: int, position: bytes | str,
                 fields: dict[bytes, bytes]) -> RecordedEvent:
    """``decode_entry``, a big field split off in the worker process, awaited."""
    name = big_field(fields)
    if name is None:
        return decode_entry(partition, position, fields)
    split = await offload.run(split_body, fields[b"b"], name)
    return _joined(partition, position, fields, name, split)


def fragment_json(value: Any) -> bytes:
    """The JSON of ``value``; an ``orjson.Fragment``'s bytes as they are (not parsed)."""
    return orjson.dumps(value)


def merge_objects(first: bytes, second: bytes) -> bytes:
    """In the worker process: ``{**first, **second}`` of two JSON objects, as JSON."""
    return orjson.dumps({**orjson.loads(first), **orjson.loads(second)})


async def merged(first: Any, second: Any) -> orjson.Fragment:
    """``{**first, **second}`` (dicts or Fragments of JSON objects) as a Fragment,
    merged in the worker process (a workflow's input updated by its start)."""
    blob = await offload.run(merge_objects, fragment_json(first), fragment_json(second))
    return orjson.Fragment(blob)


def split_data(body: bytes) -> tuple[bytes, bytes]:
    """In the worker process: the body with empty data, and the data's JSON as it was."""
    doc = orjson.loads(body)
    data = doc.pop("d", {}) if isinstance(doc, dict) else {}
    return orjson.dumps({**doc, "d": {}}), write_json(data)


async def decode_unparsed(partition: int, position: bytes | str,
                          fields: dict[bytes, bytes]) -> RecordedEvent:
    """``decode_entry`` for readers that only write the event out again (replay, SSE):
    a big body's data is split off in the worker process and comes as an
    ``orjson.Fragment`` in place of the dict, which orjson writes as it is."""
    body = fields[b"b"]
    if len(body) < offload.BIG or body[:1] == BLOB_MARK:
        return decode_entry(partition, position, fields)
    small, data = await offload.run(split_data, body)
    event = decode_entry(partition, position, {**fields, b"b": small})
    return event.model_copy(update={"data": orjson.Fragment(data)})
