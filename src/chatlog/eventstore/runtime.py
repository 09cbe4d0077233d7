"""Open the log a :class:`~chatlog.settings.Settings` describes.

With ``redis_url`` set, connect to it. Without, use the embedded Valkey under
the data dir: join the one a running ``chatlog serve`` started, or start one
for as long as the caller needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from chatlog.eventstore.embedded import EmbeddedValkey, socket_answers
from chatlog.eventstore.store import EventStore
from chatlog.settings import Settings


@dataclass
class OpenedStore:
    store: EventStore
    url: str
    embedded: EmbeddedValkey | None


@contextlib.asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[OpenedStore]:
    """The event store for ``settings``, closed (and its embedded server stopped) on exit."""
    embedded: EmbeddedValkey | None = None
    url = settings.redis_url
    if url is None:
        candidate = EmbeddedValkey(settings.valkey_dir)
        if candidate.socket is not None and socket_answers(candidate.socket):
            url = candidate.url  # a running chatlog serve owns it; share it
        else:
            embedded = candidate
            await asyncio.to_thread(embedded.start)
            url = embedded.url
    try:
        store = await EventStore.open(
            url,
            partitions=settings.partitions,
            prefix=settings.key_prefix,
            idempotency_window=settings.idempotency_window,
            outcome_window=settings.outcome_window,
            outcome_timeout=settings.outcome_timeout,
            ack=settings.ack,
            ack_replicas=settings.ack_replicas,
            ack_timeout=settings.ack_timeout,
            ack_fsync=settings.ack_fsync,
        )
        try:
            yield OpenedStore(store, url, embedded)
        finally:
            await store.close()
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
