"""``chatlog rebuild`` and ``chatlog import`` (the read models), and their ``status`` section."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from chatlog.cli._app import cli, run_async, settings_from
from chatlog.cli._progress import progress_bar
from chatlog.cli.log import STATUS_SECTIONS
from chatlog.eventstore.owner import DataDirLock
from chatlog.eventstore.runtime import OpenedStore, open_store
from chatlog.eventstore.store import EventStore
from chatlog.settings import Settings

#: Below this many events a rebuild runs in one process: the child's start (its
#: imports) cost ~1-2 s, more than it wins on a small log.
TWO_PROCESSES_FROM = 200_000


def two_processes_by_default(events: int) -> bool:
    """Whether ``chatlog rebuild`` of a log of ``events`` reads and folds in a child
    process unless told: where this process may run on 2 CPUs or more and the log
    is not small. On the 3M-event tiered log of bench/bench_rebuild_ab.py (2 idle
    cores) it rebuilt 122-136k events/s against 109-118k in one process, 3
    alternating runs each, peak RSS 276-283 against 384-389 MiB; on a busy machine
    the two processes compete and one is faster."""
    if events < TWO_PROCESSES_FROM:
        return False
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # (not on every platform)
        cpus = os.cpu_count() or 1
    return cpus >= 2


@cli.command()
@click.option("--processes/--one-process", default=None,
              help="Read and fold the log in a second process while this one writes "
                   "(the default for a log of 200,000 events or more where this process "
                   "may use 2 CPUs or more), or all in this one (less CPU in all: better "
                   "on a busy machine).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
@run_async
async def rebuild(ctx: click.Context, processes: bool | None, quiet: bool) -> None:
    """Rebuild every read model from the log, beside the live one, then switch.

    The new model is bulk-loaded into <data-dir>/readmodel.sqlite.rebuild
    while the live one keeps serving (a running `chatlog serve` included),
    then copied into the live file in one transaction: readers see the old
    model or the new one, never a mix, and the running projector resumes
    from the new checkpoint by itself. Interrupted at any moment (Ctrl-C,
    kill -9), the live model is untouched; the next rebuild starts clean.
    Uses the running `chatlog serve`'s log; without one, starts a private Valkey while it runs.
    """
    from chatlog.projections.rebuild import RebuildInterrupted
    from chatlog.projections.rebuild import rebuild as rebuild_models

    settings = settings_from(ctx)
    # Ctrl-C sets `stop` (checked between chunks and before the switch) as well as
    # cancelling: the rebuild stops without switching however the signal lands.
    stop = threading.Event()
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()

    def interrupt() -> None:
        stop.set()
        if task is not None:
            task.cancel()

    loop.add_signal_handler(signal.SIGINT, interrupt)
    try:
        async with open_store(settings, "rebuild") as opened:
            if processes is None:
                processes = two_processes_by_default((await opened.store.status()).events)
            with progress_bar("rebuild", quiet=quiet) as update:
                result = await rebuild_models(
                    opened.store, settings.sqlite_path, on_progress=update,
                    processes=processes, stop=stop,
                    sole_user=lambda: sole_user(settings, opened))
    except (asyncio.CancelledError, RebuildInterrupted):
        if stop.is_set():
            raise KeyboardInterrupt from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    rate = result.events / result.seconds if result.seconds > 0 else 0.0
    click.echo(f"rebuilt {settings.sqlite_path}: {result.events:,} events in "
               f"{result.seconds:.1f} s ({rate:,.0f} events/s), at {result.checkpoint}")


@contextlib.contextmanager
def sole_user(settings: Settings, opened: OpenedStore) -> Iterator[bool]:
    """Whether this command is the only one using the data dir's read model, holding
    the data dir's lock meanwhile: its own (a private Valkey), or taken here for as
    long as the block runs (a Redis URL and no ``chatlog serve`` on this data dir).
    Not while a server runs."""
    if opened.private:
        yield True
        return
    if opened.owner is not None:  # a chatlog serve's Valkey
        yield False
        return
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    lock = DataDirLock(settings.data_dir)
    if lock.acquire("rebuild") is not None:  # a chatlog serve (on an external Redis)
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


@cli.command(name="import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
@run_async
async def import_(ctx: click.Context, file: Path, quiet: bool) -> None:
    """Import legacy messages from FILE (JSON Lines) into the log.

    \b
    Each line: {"project_id": "Blog-Project", "thread_id": null, "role": "user",
                "content": "...", "created_at": "...", "message_id": "..."}
    (created_at, message_id and metadata are optional.)

    Project names are normalised (any case, padding) like every append;
    null-like thread ids ("null", "none", "", null) go to one thread per
    project. Event ids are derived from each line, so importing the same file
    again adds nothing. The whole file is checked first: if any line is bad,
    the bad lines are listed with their numbers and nothing is imported.
    Uses the running `chatlog serve`'s log; without one, starts a private Valkey while it runs.
    """
    from chatlog.projections.legacy import import_events, read_legacy

    settings = settings_from(ctx)
    events = read_legacy(file, settings.project_namespace)
    async with open_store(settings, "import") as opened:
        with progress_bar("import", quiet=quiet or len(events) < 1000) as update:
            imported, present = await import_events(opened.store, events, on_progress=update)
    click.echo(f"imported {imported} messages from {file} "
               f"({present} already present, {len(events)} lines)")


# -- chatlog status: the projection's lag ------------------------------------------


async def projection_status(settings: Settings, store: EventStore) -> dict[str, Any]:
    """The ``projection`` section of ``chatlog status``: lag in events and seconds."""
    from chatlog.projections.lag import measure_lag
    from chatlog.projections.queries import read_progress

    found = await asyncio.to_thread(read_progress, settings.sqlite_path, store.partitions)
    if found is None:
        return {"projection": {"read_model": str(settings.sqlite_path), "state": "not built yet"}}
    cursor, counts, counters = found
    lag = await measure_lag(store, cursor, counts)
    return {"projection": {
        "read_model": str(settings.sqlite_path),
        "checkpoint": str(cursor),
        "events_behind": lag.events_behind,
        "seconds_behind": lag.seconds_behind,
        "caught_up": lag.caught_up,
        "skipped_unknown": counters.get("skipped_unknown", 0),
    }}


STATUS_SECTIONS.append(projection_status)

__all__ = ["import_", "projection_status", "rebuild"]
