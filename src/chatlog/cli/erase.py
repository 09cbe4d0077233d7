"""``chatlog erase``: forget a project or one of its threads in every tier."""

from __future__ import annotations

import json

import click

from chatlog.cli._app import cli, run_async, settings_from
from chatlog.cli._progress import progress_bar
from chatlog.erasure import STEPS, eraser_for
from chatlog.eventstore.runtime import open_store
from chatlog.identity import normalize_project_id


@cli.command()
@click.option("--project", required=True, help="The project (name or UUID) to erase.")
@click.option("--thread", "thread_id", default=None,
              help="Erase only this thread of the project.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--by", "requested_by", default="cli", show_default=True,
              help="Who asked (kept in the tombstone event).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
@run_async
async def erase(ctx: click.Context, project: str, thread_id: str | None, yes: bool,
                requested_by: str, quiet: bool) -> None:
    """Erase a project (or one thread) from the log, the archive, the read models
    and the servers' files, and print the erasure report (JSON).

    A content-free tombstone event stays in the log. Reads of the erased
    threads answer 404 afterwards; appends to the project start a fresh
    history. An erasure interrupted by a crash is completed when ``serve``
    starts again. Run it beside the ``serve`` that owns the data dir (it waits
    for that server's read model to apply the tombstone).
    Uses the running `chatlog serve`'s log; without one, starts a private Valkey while it runs.

    \b
    Example:
      chatlog erase --project Blog-Project --thread thread-... --yes
    """
    settings = settings_from(ctx)
    key = normalize_project_id(project, settings.project_namespace)
    what = f"thread {thread_id!r} of project {key.display!r}" if thread_id else (
        f"project {key.display!r} ({key.key})")
    if not yes:
        click.confirm(f"erase {what} from every tier? This cannot be undone", abort=True)
    async with open_store(settings, "erase") as opened:
        eraser = eraser_for(settings, opened.store)
        with progress_bar("erasing", "steps", quiet=quiet, rate=False) as update:
            steps = len(STEPS) - 1  # "recorded" is where an erasure starts
            update(0, steps)
            fault = eraser.on_step

            def step(name: str) -> None:
                update(STEPS.index(name), steps)
                if fault is not None:
                    fault(name)

            eraser.on_step = step
            report = await eraser.erase(key.key, key.display, thread_id,
                                        requested_by=requested_by)
    click.echo(json.dumps(report.as_dict()))
