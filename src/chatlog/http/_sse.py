"""Server-Sent Events encoding, shared by every subscriber of one app."""

from __future__ import annotations

import orjson

from chatlog.events import RecordedEvent
from chatlog.eventstore import Cursor


class SseEncoder:
    """Encodes events for SSE once, however many subscribers send them.

    The JSON of an event (all of ``EventOut`` but its ``cursor``) is kept per
    position for the few events in flight; each subscriber only appends its
    own cursor, which with several partitions differs between subscribers.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._cache: dict[tuple[int, str], bytes] = {}

    def body(self, ev: RecordedEvent) -> bytes:
        key = (ev.partition, ev.position)
        body = self._cache.get(key)
        if body is None:
            if len(self._cache) >= self.size:
                self._cache.clear()
            body = orjson.dumps(ev.model_dump(mode="json"))[:-1]
            self._cache[key] = body
        return body

    def encode(self, ev: RecordedEvent, cursor: Cursor) -> bytes:
        """One SSE frame: ``event:`` is the event type (browsers can ``addEventListener``
        per type), ``id:`` the cursor a reconnect sends back as ``Last-Event-ID``."""
        c = str(cursor).encode()
        return (b"event: " + ev.type.encode() + b"\nid: " + c + b"\ndata: " + self.body(ev)
                + b',"cursor":"' + c + b'"}\n\n')
