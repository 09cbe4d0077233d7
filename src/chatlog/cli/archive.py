"""``chatlog archive``: one archiving pass now; and the archive's part of ``chatlog status``."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from chatlog.cli._app import cli, run_async, settings_from
from chatlog.cli._progress import Update, progress_bars
from chatlog.cli.log import STATUS_SECTIONS
from chatlog.eventstore.runtime import open_store
from chatlog.eventstore.store import EventStore
from chatlog.settings import Settings


@cli.command("archive")
@click.option("--partition", "only", type=int, multiple=True,
              help="Archive only this partition (repeatable; default: all).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
@run_async
async def archive_command(ctx: click.Context, only: tuple[int, ...], quiet: bool) -> None:
    """Run one archiving pass now.

    Seals each partition's events beyond its hot window (CHATLOG_HOT_EVENTS,
    CHATLOG_HOT_SECONDS, CHATLOG_HOT_BYTES) into Parquet segments under
    CHATLOG_ARCHIVE_URL (default <data dir>/archive), then removes them from
    Redis. Safe beside a running `chatlog serve`: one archiver per partition
    at a time (a lease in Redis); a partition whose lease another holds is
    skipped. See docs/archive.md.
    Uses the running `chatlog serve`'s log; without one, starts a private Valkey while it runs.
    """
    from chatlog.eventstore.archiver import Archiver

    settings = settings_from(ctx)
    async with open_store(settings, "archive") as opened:
        archiver = Archiver.from_settings(opened.store, settings)
        wanted = list(only) or None
        with progress_bars(quiet=quiet) as bars:
            updates: dict[int, Update] = {}

            def progress(partition: int, done: int, total: int) -> None:
                if partition not in updates:
                    updates[partition] = bars.bar(f"archiving p{partition}", total)
                updates[partition](done, total)

            results = await archiver.run_pass(wanted, progress=progress)
    for r in results:
        if r.skipped and not r.trimmed:
            click.echo(f"partition {r.partition}: nothing archived ({r.skipped})")
        else:
            click.echo(f"partition {r.partition}: archived {r.archived} events in "
                       f"{r.segments} segment{'' if r.segments == 1 else 's'}; "
                       f"removed {r.trimmed} from Redis")


async def archive_status(settings: Settings, store: EventStore) -> dict[str, Any]:
    """The archive tier per partition: segments, events, bytes, oldest and newest."""
    from chatlog.eventstore.archive import Archive

    def read() -> dict[str, Any]:
        archive = Archive.open(settings.archive_location)
        parts = []
        for p in range(store.partitions):
            segments = archive.segments(p)
            parts.append({
                "partition": p,
                "segments": len(segments),
                "events": sum(s.count for s in segments),
                "bytes": sum(s.bytes for s in segments),
                "oldest": archive.oldest(p),
                "newest": archive.newest(p),
                "deleted_before": archive.deleted_before(p),
            })
        return {"archive": {"url": archive.url, "partitions": parts}}

    return await asyncio.to_thread(read)


STATUS_SECTIONS.append(archive_status)

__all__ = ["archive_command", "archive_status"]
