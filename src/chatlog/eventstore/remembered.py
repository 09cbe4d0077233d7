"""What a log remembers of event ids: the records of :mod:`.idempotency`, looked up
(for ``migrate``, tests and the curious)."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chatlog.eventstore.archived_ids import resolve
from chatlog.eventstore.connection import guard, text
from chatlog.eventstore.idempotency import library, record, spec
from chatlog.eventstore.scripts import FIND_IDS

if TYPE_CHECKING:
    from chatlog.eventstore.store import EventStore


@dataclass(frozen=True, slots=True)
class Remembered:
    """What the log remembers of one event id."""

    #: ``"<position> <version> <digest>"`` (digest: 8 bytes, 24 hex digits in the old
    #: layout, or none).
    value: bytes
    #: Milliseconds it is still remembered for (-1: no expiry).
    ttl_ms: int
    #: ``i`` (a client's id), ``o`` (the server's) or ``l`` (a key of the old layout).
    kind: str

    @property
    def digest(self) -> bytes:
        """The content digest as the append script compares it (8 bytes, or b"" if none)."""
        known = self.value.split(b" ", 2)[2] if self.value.count(b" ") >= 2 else b""
        if len(known) == 24:
            return bytes.fromhex(known[:16].decode())
        return known


async def remembered(store: EventStore, partition: int,
                     ids: list[tuple[uuid.UUID, uuid.UUID]]) -> list[Remembered | None]:
    """What the log remembers of each ``(project, event id)`` of ``partition``: in
    Redis, or for an archived event in the archive's id files."""
    if not ids:
        return []
    script = store.redis.register_script(library() + FIND_IDS)
    appender = store._appender  # the store's own package
    args: list[Any] = [spec(appender.idempotency_window_ms, appender.outcome_window_ms,
                            appender.legacy_ids_until > time.time() * 1000)]
    for project, event_id in ids:
        args += [str(project), str(event_id), record(project, event_id, "", True)]
    reply = await guard(script(keys=[store.keys.log(partition)], args=args))
    found = [None if not reply[i + 2] else Remembered(bytes(reply[i]), int(reply[i + 1]),
                                                      text(reply[i + 2]))
             for i in range(0, len(reply), 3)]
    missing = [i for i, f in enumerate(found) if f is None]
    archive = store.archive
    if missing and archive is not None:  # the ids of archived events: in the archive
        window = max(appender.idempotency_window_ms, appender.outcome_window_ms)
        kept = await asyncio.to_thread(
            resolve, archive, partition,
            [(ids[i][0].bytes, ids[i][1].bytes) for i in missing], window)
        now = int(time.time() * 1000)
        for i, got in zip(missing, kept, strict=True):
            if got is not None:
                found[i] = Remembered(
                    f"{got.position} {got.version} ".encode() + got.digest,
                    got.expires_ms - now,
                    "o" if got.window_ms == appender.outcome_window_ms
                    and got.window_ms != appender.idempotency_window_ms else "i")
    return found
