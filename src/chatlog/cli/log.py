"""``chatlog append``, ``tail``, ``status`` and ``delete-before`` (alias ``trim``): the log
from the shell."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from typing import Any

import click

from chatlog.cli._app import cli, run_async, settings_from
from chatlog.errors import InvalidInput, PositionTrimmed
from chatlog.events import MessageAppended, NewEvent, RecordedEvent
from chatlog.eventstore import EventStore
from chatlog.eventstore.archiver import holding_lease
from chatlog.eventstore.codec import Cursor, decode_entry
from chatlog.eventstore.owner import Owner, read_owner
from chatlog.eventstore.project_index import indexed, read_projects
from chatlog.eventstore.runtime import open_store
from chatlog.filters import require_known_types
from chatlog.identity import normalize_project_id, normalize_thread_id
from chatlog.json_values import parse_object, write_json


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

    Uses the running `chatlog serve`'s log; without one, starts a private Valkey while it runs.
    """
    settings = settings_from(ctx)
    if not project.strip():
        raise InvalidInput(
            "PROJECT is empty; to write to the system scope, spell it out: system-master"
        )
    key = normalize_project_id(project, settings.project_namespace)
    thread, _ = normalize_thread_id(thread_id)
    meta = parse_object(metadata, "--metadata")
    try:
        eid = uuid.UUID(event_id) if event_id else None
    except ValueError:
        raise InvalidInput(f"--event-id must be a UUID, not {event_id!r}") from None
    event = NewEvent.of(
        MessageAppended(thread_id=thread, role=role, content=content, metadata=meta),
        project=key.key, project_name=key.display, aggregate_type="thread",
        aggregate_id=thread, event_id=eid,
    )
    async with open_store(settings, "append") as opened:
        result = await opened.store.append_one(event, expected_version=expected_version)
    click.echo(json.dumps({
        "message_id": result.event_id, "thread_id": thread, "project": str(key.key),
        "position": result.position, "partition": result.partition,
        "version": result.version, "duplicate": result.duplicate,
    }))


async def _page(store: EventStore, cursor: Cursor, project: uuid.UUID | None,
                parts: list[int] | None) -> list[RecordedEvent]:
    """The next events after ``cursor``: one project's through its index (the work is
    that project's events, not its partition's) when the log keeps one."""
    if project is None or not await indexed(store):
        events, _ = await store.read_cursor(cursor, 1000, parts)
        return events
    p = store.partition_of(project)
    try:
        entries = await read_projects(store, p, [project], cursor.positions[p], 1000)
    except PositionTrimmed as exc:
        raise await store.gone(exc, cursor) from None
    return [decode_entry(p, pos, fields) for pos, fields in entries]


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

    --follow needs a running `chatlog serve` (or CHATLOG_REDIS_URL); with
    --no-follow and no server, a private Valkey runs while it reads.
    """
    settings = settings_from(ctx)
    if types:
        require_known_types(types)
    key = normalize_project_id(project, settings.project_namespace) if project else None
    async with open_store(settings, "tail", private=not follow) as opened:
        store = opened.store
        cursor = Cursor.parse(after, store.partitions)
        parts = [store.partition_of(key.key)] if key else None
        printed = 0

        def emit(ev: RecordedEvent, cur: Cursor) -> bool:
            nonlocal printed
            if (key is None or ev.project == key.key) and (not types or ev.type in types):
                doc = ev.model_dump(mode="json")
                doc["cursor"] = str(cur)
                sys.stdout.write(write_json(doc).decode() + "\n")
                printed += 1
            return limit is not None and printed >= limit

        while True:  # catch up
            events = await _page(store, cursor, key.key if key else None, parts)
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


def _size(n: int) -> str:
    """Bytes as B / KiB / MiB / GiB."""
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
@run_async
async def status(ctx: click.Context, as_json: bool) -> None:
    """Show who owns the data dir, each partition's tiers (archive, redis: segments,
    events, bytes, oldest and newest position) and lag.

    Uses the running `chatlog serve`'s Valkey; when none runs, starts a
    private one for as long as it takes (says so). In a directory without
    chatlog data it says so and creates nothing.
    """
    settings = settings_from(ctx)
    async with open_store(settings, "status") as opened:
        st = await opened.store.status()
        owner = opened.owner
        if owner is None and settings.redis_url is not None:
            owner = await asyncio.to_thread(read_owner, settings.data_dir)
        doc: dict[str, Any] = {
            "server": f"{st.server} {st.version}",
            "url": opened.url,
            "embedded": settings.redis_url is None,
            "owner": owner_doc(owner, private=opened.private),
            "partitions": len(st.partitions),
            "length": st.length,
            "events": st.events,
            "log": [
                {"partition": p.partition, "key": p.key, "length": p.length,
                 "first": p.first_position, "last": p.last_position, "trimmed_to": p.horizon,
                 "tiers": [{"tier": t.tier, "segments": t.segments, "events": t.events,
                            "bytes": t.bytes, "oldest": t.oldest, "newest": t.newest}
                           for t in p.tiers]}
                for p in st.partitions
            ],
        }
        for section in _status_hooks():
            doc.update(await section(settings, opened.store))
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    print_status(doc)


def owner_doc(owner: Owner | None, *, private: bool) -> dict[str, Any] | None:
    """The ``owner`` section of ``chatlog status``: the serve that owns the data dir."""
    if owner is None or private:
        return None
    return owner.as_dict()


def _uptime(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return (f"{days}d " if days else "") + f"{hours}:{minutes:02d}:{secs:02d}"


def _cell(value: Any) -> Any:
    """A table cell: text, or a table of its own for a list of records (never raw JSON)."""
    if value is None:
        return "-"
    if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
        return _records(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _records(rows: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(*rows[0].keys(), box=None)
    for r in rows:
        table.add_row(*(_cell(r.get(k)) for k in rows[0]))
    return table


#: Columns of ``chatlog status`` when its output is not a terminal.
STATUS_WIDTH = 160


def print_status(doc: dict[str, Any]) -> None:
    """``chatlog status`` for people: a few lines and one table per section."""
    from rich.console import Console
    from rich.table import Table

    # Piped or redirected, rich would assume 80 columns and cut positions short.
    console = Console(highlight=False, soft_wrap=True,
                      width=None if sys.stdout.isatty() else STATUS_WIDTH)
    owner = doc.get("owner")
    console.print(f"server      {doc['server']} at {doc['url']}")
    if owner:
        console.print(f"owner       chatlog {owner['command']} pid {owner['pid']}"
                      f"{' at ' + owner['address'] if owner.get('address') else ''}, "
                      f"up {_uptime(owner['uptime_seconds'])}")
    elif doc.get("embedded"):
        console.print("owner       none: no chatlog serve runs on this data dir "
                      "(a private Valkey was started for this command)")
    console.print(f"partitions  {doc['partitions']}   events {doc['events']} "
                  f"({doc['length']} in Redis)")
    log_table = Table("partition", "tier", "segments", "events", "bytes", box=None)
    for heading in ("oldest", "newest", "deleted up to"):  # positions: whole, folded if need be
        log_table.add_column(heading, no_wrap=False, overflow="fold")
    for p in doc["log"]:
        for t in p["tiers"]:
            log_table.add_row(f"p{p['partition']}", t["tier"], str(t["segments"]),
                              f"{t['events']:,}", _size(t["bytes"]), t["oldest"] or "-",
                              t["newest"] or "-", p["trimmed_to"] or "-")
    console.print(log_table)
    shown = {"server", "url", "embedded", "owner", "partitions", "length", "events", "log"}
    for name, value in doc.items():
        if name in shown:
            continue
        console.print(f"\n[bold]{name}[/bold]")
        rows = value if isinstance(value, list) else None
        if rows and all(isinstance(r, dict) for r in rows):
            table = _records(rows)
        else:
            table = Table("", "", box=None, show_header=False)
            for key, item in (value.items() if isinstance(value, dict) else [("", value)]):
                table.add_row(str(key), _cell(item))
        console.print(table)


async def _delete_before(ctx: click.Context, partition: int, before: str, yes: bool) -> None:
    settings = settings_from(ctx)
    if not yes:
        click.confirm(f"delete every event of partition {partition} before {before}, in every "
                      "tier, for good?", abort=True)
    async with open_store(settings, "delete-before") as opened:
        # Hold the partition's archiver lease: a serve's archiver publishing a segment
        # while the manifest is rewritten could otherwise lose it (then its events).
        async with holding_lease(opened.store, partition):
            removed = await opened.store.trim(partition, before)
        horizon = await opened.store.horizon(partition)
    click.echo(f"deleted {removed} events from partition {partition}"
               + (f"; cursors up to {horizon} are gone (410), reads without a cursor start "
                  "after it" if horizon else ""))


@cli.command(name="delete-before")
@click.argument("partition", type=int)
@click.argument("before")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
@run_async
async def delete_before(ctx: click.Context, partition: int, before: str, yes: bool) -> None:
    """Delete PARTITION's events before position BEFORE, for good (explicit retention).

    Nothing is deleted otherwise: archiving moves old events to the archive, it
    does not delete them. Afterwards a reader whose cursor lies in the deleted
    history gets a clear "gone" error (HTTP 410) naming the oldest cursor still
    available; a reader without a cursor starts at the oldest event kept, and
    `chatlog rebuild` rebuilds from it. Asks for confirmation unless --yes.
    Uses the running `chatlog serve`'s log; without one, starts a private Valkey while it runs.
    """
    await _delete_before(ctx, partition, before, yes)


@cli.command()
@click.argument("partition", type=int)
@click.argument("before")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
@run_async
async def trim(ctx: click.Context, partition: int, before: str, yes: bool) -> None:
    """The old name of `chatlog delete-before` (same arguments, same effect).

    Uses the running `chatlog serve`'s log; without one, starts a private Valkey while it runs.
    """
    await _delete_before(ctx, partition, before, yes)
