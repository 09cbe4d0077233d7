"""``chatlog migrate``: copy the log to another deployment (one server → a cluster).

Also adds the cluster section to ``chatlog status``: which node serves each partition.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from chatlog.cli._app import cli, run_async, settings_from
from chatlog.cli.log import STATUS_SECTIONS
from chatlog.eventstore.migration import MigrationProgress
from chatlog.eventstore.migration import migrate as copy_log
from chatlog.eventstore.runtime import open_store
from chatlog.eventstore.store import EventStore
from chatlog.settings import Settings


@cli.command()
@click.option("--to", "to_url", required=True,
              help="The target: redis://, unix:// or redis+cluster://host:port[,host:port].")
@click.option("--to-partitions", type=click.IntRange(1, 1024), default=None,
              help="Partitions of the target log (default: the source's). Fixed once created.")
@click.option("--to-prefix", default=None, help="Key prefix in the target (default: the source's).")
@click.option("--batch", type=click.IntRange(1, 10_000), default=500, show_default=True,
              help="Events per round trip.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
@run_async
async def migrate(ctx: click.Context, to_url: str, to_partitions: int | None,
                  to_prefix: str | None, batch: int, quiet: bool) -> None:
    """Copy every event of this deployment's log to the log at --to.

    Event ids, aggregates, versions, times and the order per aggregate are
    kept; the partition count may change (say 1 → 16 on a cluster). Rerunning
    is safe: events the target already has are skipped, so an interrupted
    copy resumes. Stop the writers (or copy again after stopping them), then
    point CHATLOG_REDIS_URL and CHATLOG_PARTITIONS at the target.

    \b
    Example:
      chatlog migrate --to redis+cluster://10.0.0.5:7000 --to-partitions 16
    """
    settings = settings_from(ctx)
    async with open_store(settings) as opened:
        source = opened.store
        target = await EventStore.open(
            to_url,
            partitions=to_partitions or source.partitions,
            prefix=to_prefix or settings.key_prefix,
            idempotency_window=settings.idempotency_window,
        )
        try:
            total = (await source.status()).length
            show = not quiet and sys.stderr.isatty()
            with click.progressbar(length=total, label="copying", file=sys.stderr,
                                   show_pos=True) if show else _NoBar() as bar:
                seen = 0

                def advance(p: MigrationProgress) -> None:
                    nonlocal seen
                    bar.update(p.done - seen)
                    seen = p.done
                    if not show and not quiet:
                        click.echo(f"{p.done}/{p.total} events ({p.copied} copied, "
                                   f"{p.skipped} already there)", err=True)

                progress = await copy_log(source, target, batch=batch, on_progress=advance)
        finally:
            await target.close()
    click.echo(json.dumps({
        "source": opened.url, "target": to_url, "partitions": target.partitions,
        "events": progress.total, "copied": progress.copied, "skipped": progress.skipped,
    }))


class _NoBar:
    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int) -> None:
        return None


async def _cluster_section(settings: Settings, store: EventStore) -> dict[str, Any]:
    where = await store.placement()
    return {"cluster": where} if where else {}


STATUS_SECTIONS.append(_cluster_section)
