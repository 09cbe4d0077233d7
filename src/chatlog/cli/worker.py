"""``chatlog worker``: run a job worker with the built-in demo handler; ``chatlog dead-letters``."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import click

from chatlog.cli._app import cli, run_async, settings_from
from chatlog.cli.log import STATUS_SECTIONS
from chatlog.eventstore.runtime import open_store
from chatlog.eventstore.store import EventStore
from chatlog.orchestrator.job_admin import job_status, list_dead_letters
from chatlog.orchestrator.jobs import Job
from chatlog.orchestrator.worker import Worker
from chatlog.settings import Settings


async def demo_handler(job: Job) -> dict[str, Any]:
    """Kinds: ``echo`` (returns the payload), ``sleep`` (``seconds``), ``fail`` (raises)."""
    if job.kind == "echo":
        return dict(job.payload)
    if job.kind == "sleep":
        seconds = float(job.payload.get("seconds", 1.0))
        await asyncio.sleep(seconds)
        return {"slept": seconds}
    if job.kind == "fail":
        raise RuntimeError(str(job.payload.get("message", "this job always fails")))
    raise ValueError(f"the demo worker has no handler for job kind {job.kind!r}")


@cli.command()
@click.option("--name", default=None, help="Consumer name (default: worker-<host>-<pid>-<rand>).")
@click.option("--lease", type=float, default=None,
              help="Seconds a job lease lasts; renewed every lease/3.  [env: CHATLOG_JOB_LEASE]")
@click.option("--max-deliveries", type=int, default=None,
              help="Deliveries before a job is dead-lettered.  [env: CHATLOG_JOB_MAX_DELIVERIES]")
@click.pass_context
@run_async
async def worker(ctx: click.Context, name: str | None, lease: float | None,
                 max_deliveries: int | None) -> None:
    """Take jobs from the job streams and run the demo handler on them until interrupted.

    \b
    Job kinds the demo handler knows:
      echo   returns its payload as the result
      sleep  sleeps payload["seconds"] (default 1), heartbeating its lease
      fail   raises (retried, then dead-lettered after max deliveries)
    Platform code runs its own handlers with chatlog.orchestrator.Worker.
    """
    settings = settings_from(ctx, job_lease=lease, job_max_deliveries=max_deliveries)
    async with open_store(settings) as opened:
        w = Worker(opened.store, settings, demo_handler, name=name)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(w.stop()))
        click.echo(f"worker {w.name}: taking jobs (lease {settings.job_lease:g} s)", err=True)
        await w.run()
        click.echo(f"worker {w.name}: stopped after {w.processed} jobs", err=True)


@cli.command("dead-letters")
@click.option("--limit", type=int, default=100, show_default=True, help="At most this many.")
@click.pass_context
@run_async
async def dead_letters(ctx: click.Context, limit: int) -> None:
    """List jobs that used up their deliveries (JSON Lines, oldest first)."""
    settings = settings_from(ctx)
    async with open_store(settings) as opened:
        for d in await list_dead_letters(opened.store, limit=limit):
            click.echo(json.dumps({
                "job_id": d.job_id, "kind": d.kind, "project": str(d.project),
                "project_name": d.project_name, "workflow_id": d.workflow_id,
                "deliveries": d.deliveries, "reason": d.reason, "payload": d.payload,
                "partition": d.partition, "position": d.position,
            }))


async def _jobs_section(settings: Settings, store: EventStore) -> dict[str, Any]:
    return await job_status(store)


STATUS_SECTIONS.append(_jobs_section)
