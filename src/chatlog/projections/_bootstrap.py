"""A projector on a fresh data dir builds its read model the fast way first.

When the read model has applied nothing yet and the log has archived history, the
live projector does not fold the whole log event by event: it runs the columnar
rebuild (:func:`chatlog.projections.rebuild.rebuild`: segments folded column by
column, bulk-loaded into a file beside the empty one, switched in atomically), then
follows the log from the rebuilt checkpoint. The log is read and folded in a child
process, so the server answers meanwhile without waiting on the folds. A rebuild
that cannot run (another one holds the lock, the archive cannot be read, or it
fails) leaves the ordinary catch-up to do the work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

from chatlog.eventstore.codec import START, Cursor
from chatlog.eventstore.store import EventStore
from chatlog.projections.base import Projection

log = logging.getLogger(__name__)


async def has_archived_history(store: EventStore) -> bool:
    """Whether any partition of ``store`` has sealed segments (manifest re-read)."""
    archive = store.archive
    if archive is None:
        return False

    def any_segment() -> bool:
        archive.reload()
        return any(archive.segments(p) for p in range(store.partitions))

    return await asyncio.to_thread(any_segment)


async def bootstrap(store: EventStore, path: Path, projections: Sequence[Projection],
                    committed: Cursor, *, chunk: int = 5_000) -> bool:
    """Rebuild the read model at ``path`` when it has applied nothing (``committed`` is
    the start) and the log has archived history; True when a rebuild was switched in
    (the caller re-reads its checkpoint from the file)."""
    if any(p != START for p in committed.positions):
        return False
    from chatlog.projections.rebuild import rebuild

    try:
        if not await has_archived_history(store):
            return False
        log.info("projector: no read model yet and the log has archived history; building "
                 "it by a columnar rebuild")
        # Read and folded in a child process: folding a batch in here would hold
        # this server's event loop (and its GIL) for tens of milliseconds at a time.
        result = await rebuild(store, path, projections, chunk=chunk, processes=True)
    except Exception as exc:  # the ordinary catch-up still works
        log.warning("projector: the initial rebuild did not run (%s: %s); catching up event "
                    "by event instead", exc.__class__.__name__, exc)
        return False
    log.info("projector: built the read model from %d events in %.1f s; following the log",
             result.events, result.seconds)
    return True
