"""``chatlog append``, ``tail``, ``status`` and ``trim``: the log from the shell."""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

import click
import orjson

from chatlog.cli._app import cli, run_async, settings_from
from chatlog.errors import InvalidInput
from chatlog.events import MessageAppended, NewEvent, RecordedEvent
from chatlog.eventstore.codec import Cursor
from chatlog.eventstore.runtime import open_store
from chatlog.identity import normalize_project_id, normalize_thread_id


@cli.command()
@click.argument("project")
@click.argument("content")
@click.option("--thread", "thread_id", default=None,
              help="Thread id; omit (or null) to start a new thread-<uuid>.")
@click.option("--role", default="user", show_default=True, help="Who wrote the message.")
@click.option("--event-id", default=None,
              help="A UUID for the event; a retry with the same id appends nothing.")
@click.option("--expected-version", type=int, default=None,
              help="Append only if the thread is at this version (0: a new thread).")
@click.option("--metadata", default=None, help="A JSON object stored with the message.")
@click.pass_context
@run_async
async def append(ctx: click.Context, project: str, content: str, thread_id: str | None,
                 role: str, event_id: str | None, expected_version: int | None,
                 metadata: str | None) -> None:
    """Append a chat message to PROJECT's log and print what the log assigned.

    \b
    Example:
      chatlog append Blog-Project "hello" --role user
      chatlog append blog-project "again" --thread thread-...   # same project, same thread
    """
    settings = settings_from(ctx)
    key = normalize_project_id(project, settings.project_namespace)
    thread, _ = normalize_thread_id(thread_id)
    try:
        meta: dict[str, Any] = json.loads(metadata) if metadata else {}
        eid = uuid.UUID(event_id) if event_id else None
    except ValueError as exc:
        raise InvalidInput(
            f"--metadata must be a JSON object and --event-id a UUID: {exc}"
        ) from None
    if not isinstance(meta, dict):
        raise InvalidInput("--metadata must be a JSON object")
    event = NewEvent.of(
        MessageAppended(thread_id=thread, role=role, content=content, metadata=meta),
        project=key.key, project_name=key.display, aggregate_type="thread",
        aggregate_id=thread, event_id=eid,
    )
    async with open_store(settings) as opened:
        result = await opened.store.append_one(event, expected_version=expected_version)
    click.echo(json.dumps({
        "message_id": result.event_id, "thread_id": thread, "project": str(key.key),
        "position": result.position, "partition": result.partition,
        "version": result.version, "duplicate": result.duplicate,
    }))


@cli.command()
@click.option("--after", default=None,
              help="Start after this position (a cursor printed by an earlier tail). "
                   "Default: the beginning of the log.")
@click.option("--project", default=None, help="Only this project's events (name or UUID).")
@click.option("--type", "types", multiple=True, help="Only events of this type (repeatable).")
@click.option("--follow/--no-follow", default=True, show_default=True,
              help="Keep waiting for new events, or stop at the end of the log.")
@click.option("--limit", type=int, default=None, help="Stop after this many events.")
@click.pass_context
@run_async
async def tail(ctx: click.Context, after: str | None, project: str | None,
               types: tuple[str, ...], follow: bool, limit: int | None) -> None:
    """Print the log's events as JSON lines, following new ones as they arrive.

    Each line carries "cursor": pass it to --after to resume exactly after
    that event, with nothing skipped and nothing repeated.
    """
    settings = settings_from(ctx)
    key = normalize_project_id(project, settings.project_namespace) if project else None
    async with open_store(settings) as opened:
        store = opened.store
        cursor = Cursor.parse(after, store.partitions)
        parts = [store.partition_of(key.key)] if key else None
        printed = 0

        def emit(ev: RecordedEvent, cur: Cursor) -> bool:
            nonlocal printed
            if (key is None or ev.project == key.key) and (not types or ev.type in types):
                doc = ev.model_dump(mode="json")
                doc["cursor"] = str(cur)
                sys.stdout.write(orjson.dumps(doc).decode() + "\n")
                printed += 1
            return limit is not None and printed >= limit

        while True:  # catch up
            events, _ = await store.read_cursor(cursor, 1000, parts)
            if not events:
                break
            for ev in events:
                cursor = cursor.advanced(ev.partition, ev.position)
                if emit(ev, cursor):
                    return
            sys.stdout.flush()
        if not follow:
            return
        async for batch in store.tail(cursor, partitions=parts):
            for ev in batch:
                cursor = cursor.advanced(ev.partition, ev.position)
                if emit(ev, cursor):
                    return
            sys.stdout.flush()


def _status_hooks() -> list[Any]:
    """Extra status sections (the projection's lag) registered by other layers."""
    return list(STATUS_SECTIONS)


#: ``async (settings, store) -> dict`` callables whose results ``chatlog status`` adds.
STATUS_SECTIONS: list[Any] = []


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
@run_async
async def status(ctx: click.Context, as_json: bool) -> None:
    """Show the server, the partitions (length, first and last position) and lag."""
    settings = settings_from(ctx)
    async with open_store(settings) as opened:
        st = await opened.store.status()
        doc: dict[str, Any] = {
            "server": f"{st.server} {st.version}",
            "url": opened.url,
            "embedded": opened.embedded is not None or settings.redis_url is None,
            "partitions": len(st.partitions),
            "length": st.length,
            "log": [
                {"partition": p.partition, "key": p.key, "length": p.length,
                 "first": p.first_position, "last": p.last_position, "trimmed_to": p.horizon}
                for p in st.partitions
            ],
        }
        for section in _status_hooks():
            doc.update(await section(settings, opened.store))
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"server      {doc['server']} at {doc['url']}")
    click.echo(f"partitions  {doc['partitions']}   events {doc['length']}")
    for p in doc["log"]:
        click.echo(f"  p{p['partition']:<3} {p['length']:>10} events  first {p['first'] or '-'}  "
                   f"last {p['last'] or '-'}" + (f"  trimmed to {p['trimmed_to']}"
                                                 if p["trimmed_to"] else ""))
    for name, value in doc.items():
        if name not in {"server", "url", "embedded", "partitions", "length", "log"}:
            click.echo(f"{name:<11} {json.dumps(value)}")


@cli.command()
@click.argument("partition", type=int)
@click.argument("before")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
@run_async
async def trim(ctx: click.Context, partition: int, before: str, yes: bool) -> None:
    """Remove PARTITION's events before position BEFORE (explicit retention).

    Readers asking for a removed position afterwards get a clear "gone" error
    (HTTP 410), never a silent gap.
    """
    settings = settings_from(ctx)
    if not yes:
        click.confirm(f"remove every event of partition {partition} before {before}?", abort=True)
    async with open_store(settings) as opened:
        removed = await opened.store.trim(partition, before)
    click.echo(f"removed {removed} events from partition {partition}")
