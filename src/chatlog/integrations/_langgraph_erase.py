"""Deleting a LangGraph thread's checkpoints: erased from every tier, not only unlisted.

A deletion is recorded as an erasure first (durable: ``chatlog serve``
finishes it after a crash), then the saver's index keys forget the
checkpoints (reads find nothing from then on), then the erasure runs:
the events leave the Redis stream, the archive's segments and, once
Valkey rewrites its append-only file, the disk; a tombstone event without
content stays in the log (:mod:`chatlog.erasure`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from chatlog.erasure import Eraser
from chatlog.eventstore.store import EventStore
from chatlog.identity import ProjectKey
from chatlog.integrations._langgraph_store import (
    UNINDEX,
    Keys,
    checkpoint_prefix,
    thread_prefix,
)
from chatlog.settings import Settings

if TYPE_CHECKING:
    from chatlog.eventstore.archive import Archive


class Deleter:
    """Erases checkpoints of one project's saver (see the module's docstring)."""

    def __init__(self, store: EventStore, project: ProjectKey, keys: Keys,
                 settings: Settings | None) -> None:
        self.store = store
        self.project = project
        self.keys = keys

        def archive() -> Archive | None:  # the store's, else the data dir's once it exists
            if store.archive is not None or settings is None:
                return store.archive
            if not settings.archive_dir.exists():
                return None
            from chatlog.eventstore.archive import Archive

            return Archive.open(str(settings.archive_dir))

        # The read models keep no rows of the integrations' aggregates: none to purge.
        # Under the data dir, a Valkey's RDB dump file is the erasure's to remove.
        data_dir = settings.data_dir if settings is not None else None
        self.eraser = Eraser(store, archive=archive, data_dir=data_dir)
        #: For all but the last of several erasures: the last one's rewrite of the
        #: append-only files covers them.
        self.eraser_sharing_rewrite = Eraser(store, archive=archive, rewrite_aof=False)
        self._unindex = store.redis.register_script(UNINDEX)

    async def delete_thread(self, thread_id: str) -> None:
        """Every checkpoint of the thread, and its writes."""
        await self.delete([(thread_id, None)])

    async def delete(self, plan: Sequence[tuple[str, Sequence[tuple[str, str]] | None]]) -> None:
        """For each ``(thread id, targets)``: the checkpoints ``targets`` (``(ns, checkpoint
        id)`` pairs; None: every one, the thread goes) and their writes. The append-only
        files are rewritten once, after the last erasure."""
        scopes: list[str] = []
        for thread_id, targets in plan:
            if targets is None:
                scopes.append(thread_prefix(thread_id))
            else:
                scopes.extend(checkpoint_prefix(thread_id, ns, cid) for ns, cid in targets)
        if not scopes:
            return
        reports = [await self.eraser.request(
            self.project.key, self.project.display, aggregates=f"langgraph/{scope}",
            requested_by="langgraph") for scope in scopes]
        for thread_id, targets in plan:
            if targets is None or targets:
                await self._forget(thread_id, None if targets is None else list(targets))
        for report in reports[:-1]:
            await self.eraser_sharing_rewrite.run(report.erasure_id)
        await self.eraser.run(reports[-1].erasure_id)

    async def _forget(self, thread_id: str, targets: list[tuple[str, str]] | None) -> None:
        k = self.keys
        args: list[Any] = [k.thread(thread_id), thread_id, "1" if targets is None else "0"]
        for ns, cid in targets or []:
            args.extend((ns, cid))
        await self._unindex(keys=[k.ns_set(thread_id), k.members(thread_id), k.threads],
                            args=args)
