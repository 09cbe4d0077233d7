"""Server-Sent Events encoding, shared by every subscriber of one app."""

from __future__ import annotations

from typing import Any

import orjson

from chatlog.events import RecordedEvent
from chatlog.eventstore import Cursor

_FIELDS = tuple(RecordedEvent.model_fields)


def event_json(ev: RecordedEvent) -> bytes:
    """The event's JSON without its closing brace. Data that is an ``orjson.Fragment``
    (a big event's, split off in the worker process) is written as it is, unparsed."""
    data: Any = ev.data
    if not isinstance(data, orjson.Fragment):
        return orjson.dumps(ev.model_dump(mode="json"))[:-1]
    doc = ev.model_dump(mode="json", exclude={"data"})
    ordered = {name: data if name == "data" else doc[name]
               for name in _FIELDS if name == "data" or name in doc}
    return orjson.dumps(ordered)[:-1]


def out_json(ev: RecordedEvent, cursor: Cursor) -> bytes:
    """The event as ``EventOut`` JSON (with the cursor that resumes after it)."""
    return event_json(ev) + b',"cursor":"' + str(cursor).encode() + b'"}'


class SseEncoder:
    """Encodes events for SSE once, however many subscribers send them.

    The JSON of an event (all of ``EventOut`` but its ``cursor``) is kept per
    position for the few events in flight; each subscriber only appends its
    own cursor, which with several partitions differs between subscribers.
    """

    def __init__(self, size: int = 4096, max_bytes: int = 32 * 2**20) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self._cache: dict[tuple[int, str], bytes] = {}
        self._bytes = 0

    def body(self, ev: RecordedEvent) -> bytes:
        key = (ev.partition, ev.position)
        body = self._cache.get(key)
        if body is None:
            body = event_json(ev)
            if len(self._cache) >= self.size or self._bytes + len(body) > self.max_bytes:
                self._cache.clear()  # bounded by bytes too: events may be 1 MB each
                self._bytes = 0
            self._cache[key] = body
            self._bytes += len(body)
        return body

    def encode(self, ev: RecordedEvent, cursor: Cursor) -> bytes:
        """One SSE frame: ``event:`` is the event type (browsers can ``addEventListener``
        per type), ``id:`` the cursor a reconnect sends back as ``Last-Event-ID``."""
        c = str(cursor).encode()
        return (b"event: " + ev.type.encode() + b"\nid: " + c + b"\ndata: " + self.body(ev)
                + b',"cursor":"' + c + b'"}\n\n')
