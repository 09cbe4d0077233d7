"""``chatlog migrate``: copy the log to another deployment (one server → a cluster).

Also adds the cluster section to ``chatlog status``: which node serves each partition.
"""

from __future__ import annotations

import json
from typing import Any

import click

from chatlog.cli._app import cli, run_async, settings_from
from chatlog.cli._progress import progress_bar
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

    Uses the running `chatlog serve`'s log; without one, starts a private Valkey while it runs.
    It is stopped however migrate ends; one a killed run left is stopped first.
    """
    settings = settings_from(ctx)
    async with open_store(settings, "migrate") as opened:
        source = opened.store
        target = await EventStore.open(
            to_url,
            partitions=to_partitions or source.partitions,
            prefix=to_prefix or settings.key_prefix,
            idempotency_window=settings.idempotency_window,
        )
        try:
            total = (await source.status()).events
            with progress_bar("copying", quiet=quiet) as update:
                update(0, total)

                def advance(p: MigrationProgress) -> None:
                    update(p.done, p.total)

                progress = await copy_log(source, target, batch=batch, on_progress=advance)
        finally:
            await target.close()
    click.echo(json.dumps({
        "source": opened.url, "target": to_url, "partitions": target.partitions,
        "events": progress.total, "copied": progress.copied, "skipped": progress.skipped,
    }))


async def _cluster_section(settings: Settings, store: EventStore) -> dict[str, Any]:
    where = await store.placement()
    return {"cluster": where} if where else {}


STATUS_SECTIONS.append(_cluster_section)
