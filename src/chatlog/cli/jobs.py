"""``chatlog jobs enqueue``, ``jobs list`` and ``jobs show``: jobs from the shell."""

from __future__ import annotations

from typing import get_args

import click

from chatlog.cli._app import cli, run_async, settings_from
from chatlog.errors import InvalidInput, NotFound
from chatlog.eventstore.runtime import open_store
from chatlog.identity import normalize_project_id
from chatlog.json_values import parse_object
from chatlog.orchestrator.job_records import JobState, list_jobs, read_job
from chatlog.orchestrator.jobs import new_job
from chatlog.orchestrator.service import Orchestrator


@cli.group()
def jobs() -> None:
    """Enqueue jobs for workers, list a project's jobs, inspect one (JSON output).

    Uses the running `chatlog serve`'s log; without one, starts a private Valkey while it runs.
    """


@jobs.command()
@click.argument("project")
@click.argument("kind")
@click.option("--payload", default=None, help="A JSON object for the handler.")
@click.option("--workflow-id", default=None,
              help="The workflow the job belongs to; default: a new one, started.")
@click.option("--job-id", default=None, help="Your id for the job; default job-<uuid4>.")
@click.option("--max-deliveries", type=int, default=None,
              help="Deliveries before it is dead-lettered.  [env: CHATLOG_JOB_MAX_DELIVERIES]")
@click.pass_context
@run_async
async def enqueue(ctx: click.Context, project: str, kind: str, payload: str | None,
                  workflow_id: str | None, job_id: str | None,
                  max_deliveries: int | None) -> None:
    """Queue a job of KIND for PROJECT and print it (``chatlog worker`` runs it).

    \b
    Example:
      chatlog jobs enqueue Blog-Project echo --payload '{"n": 1}'
      chatlog jobs list Blog-Project --state done
    """
    settings = settings_from(ctx)
    key = normalize_project_id(project, settings.project_namespace)
    data = parse_object(payload, "--payload")
    async with open_store(settings, "jobs") as opened:
        orchestrator = Orchestrator(opened.store, settings)
        if job_id is not None and await read_job(opened.store, key, job_id) is not None:
            raise InvalidInput(f"job {job_id} exists already in project {key.display!r}")
        # The job's own checks (kind, job_id) before its workflow exists.
        new_job(kind, data, max_deliveries if max_deliveries is not None else 1, job_id)
        if workflow_id is None:
            created = await orchestrator.create_workflow(key, name=f"job:{kind}")
            workflow_id = created.workflow_id
            await orchestrator.start_workflow(key, workflow_id)
        new_id = await orchestrator.enqueue_job(
            key, workflow_id, kind=kind, payload=data, job_id=job_id,
            max_deliveries=max_deliveries,
        )
        view = await read_job(opened.store, key, new_id)
        assert view is not None
        click.echo(view.model_dump_json())


@jobs.command("list")
@click.argument("project")
@click.option("--state", type=click.Choice(get_args(JobState)), default=None,
              help="Only jobs in this state (dead: the dead letters).")
@click.option("--limit", type=int, default=50, show_default=True, help="At most this many.")
@click.pass_context
@run_async
async def list_(ctx: click.Context, project: str, state: JobState | None, limit: int) -> None:
    """List PROJECT's jobs, newest first (JSON Lines)."""
    settings = settings_from(ctx)
    key = normalize_project_id(project, settings.project_namespace)
    async with open_store(settings, "jobs") as opened:
        cursor: str | None = None
        left = limit
        while left > 0:
            page, cursor = await list_jobs(
                opened.store, key, state=state, limit=min(left, 500), cursor=cursor
            )
            for view in page:
                click.echo(view.model_dump_json())
            left -= len(page)
            if cursor is None:
                break


@jobs.command()
@click.argument("project")
@click.argument("job_id")
@click.pass_context
@run_async
async def show(ctx: click.Context, project: str, job_id: str) -> None:
    """Print one job of PROJECT: state, attempts, last error."""
    settings = settings_from(ctx)
    key = normalize_project_id(project, settings.project_namespace)
    async with open_store(settings, "jobs") as opened:
        view = await read_job(opened.store, key, job_id)
        if view is None:
            raise NotFound(f"job {job_id} does not exist in project {key.display!r}")
        click.echo(view.model_dump_json())
