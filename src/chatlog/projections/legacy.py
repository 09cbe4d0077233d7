"""Import legacy chat messages (JSON Lines) into the log, idempotently.

Each line is one message of the old platform::

    {"project_id": "Blog-Project", "thread_id": "null", "role": "user",
     "content": "hi", "created_at": "2025-12-01T10:00:00Z", "message_id": "42"}

- ``project_id`` is a raw name in any case or padding (normalised as
  everywhere else), a UUID, or null/blank/``system-master`` (the system scope).
- ``thread_id`` null, ``""``, ``"null"``, ``"none"``, ``"undefined"``: the
  old platform stored these under one "null" thread per project, so they go
  to one deterministic thread per project, ``thread-<uuid5(project)>``.
- Every event id is deterministic: the ``message_id`` when it is a UUID,
  else a uuid5 of it, else a uuid5 of the line's content and its occurrence
  in the file. Importing the same file again appends nothing: ids already in
  a thread are skipped (this lasts beyond the log's idempotency window), and
  the append itself is idempotent by id.

The whole file is validated first; any bad line aborts the import with the
line numbers and nothing appended. Messages of one thread keep file order.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chatlog.errors import ChatlogError, InvalidInput
from chatlog.events import MessageAppended, NewEvent
from chatlog.eventstore.store import EventStore
from chatlog.identity import is_new_thread, normalize_project_id, normalize_thread_id

#: Namespace of the deterministic ids an import derives (fixed: changing it
#: would make a re-import append everything again).
IMPORT_NAMESPACE = uuid.UUID("0d9a8c52-4f7e-5b1e-a3c4-6c686c656761")
#: Most problems listed in one error.
MAX_REPORTED = 20
#: Events of one thread per append (all or nothing each).
APPEND_BATCH = 200
#: Threads appended concurrently.
CONCURRENCY = 64


class LegacyMessage(BaseModel):
    """One line of a legacy export."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)

    project_id: str | None = None
    thread_id: str | None = None
    role: str = Field(min_length=1, max_length=64)
    content: str
    created_at: datetime | None = None
    message_id: str | int | None = None
    metadata: dict[str, Any] | None = None


class ImportRejected(InvalidInput):
    """The file has bad lines; nothing was imported."""

    def __init__(self, path: Path, problems: list[str], bad: int) -> None:
        self.problems = problems
        shown = "; ".join(problems[:MAX_REPORTED])
        more = f"; and {bad - MAX_REPORTED} more" if bad > MAX_REPORTED else ""
        super().__init__(f"{path}: {bad} bad line{'s' if bad != 1 else ''}, nothing imported: "
                         f"{shown}{more}")


@dataclass(frozen=True)
class ImportResult:
    lines: int
    imported: int
    already_present: int


def _event_id(msg: LegacyMessage, project: uuid.UUID, thread_id: str,
              seen: Counter[bytes]) -> uuid.UUID:
    if msg.message_id is not None:
        text = str(msg.message_id).strip()
        try:
            return uuid.UUID(text)
        except ValueError:
            return uuid.uuid5(IMPORT_NAMESPACE, f"legacy-message:{text}")
    identity = orjson.dumps([str(project), thread_id, msg.role, msg.content,
                             msg.created_at.isoformat() if msg.created_at else None])
    seen[identity] += 1  # the same message twice in a thread stays two messages
    return uuid.uuid5(IMPORT_NAMESPACE, f"legacy-line:{seen[identity]}:{identity.decode()}")


def legacy_thread_id(project: uuid.UUID) -> str:
    """The thread that a project's null-thread legacy messages go to."""
    return f"thread-{uuid.uuid5(IMPORT_NAMESPACE, f'legacy-null-thread:{project}')}"


def read_legacy(path: Path, namespace: uuid.UUID) -> list[NewEvent]:
    """Validate the whole file and return its events; :class:`ImportRejected` if any line is bad."""
    try:
        raw_lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from None
    problems: list[str] = []
    bad = 0
    events: list[NewEvent] = []
    seen: Counter[bytes] = Counter()
    for number, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue
        try:
            doc = orjson.loads(raw)
            if not isinstance(doc, dict):
                raise InvalidInput(f"expected a JSON object, got {type(doc).__name__}")
            msg = LegacyMessage.model_validate(doc)
            key = normalize_project_id(msg.project_id, namespace)
            if is_new_thread(msg.thread_id):
                thread_id = legacy_thread_id(key.key)
            else:
                thread_id, _ = normalize_thread_id(msg.thread_id)
            metadata: dict[str, Any] = dict(msg.metadata or {})
            metadata["imported"] = "legacy"
            if msg.created_at is not None:
                metadata["created_at"] = msg.created_at.isoformat()
            if msg.message_id is not None:
                metadata["legacy_message_id"] = str(msg.message_id)
            events.append(NewEvent.of(
                MessageAppended(thread_id=thread_id, role=msg.role, content=msg.content,
                                metadata=metadata, created_at=msg.created_at),
                project=key.key, project_name=key.display, aggregate_type="thread",
                aggregate_id=thread_id, event_id=_event_id(msg, key.key, thread_id, seen),
            ))
        except orjson.JSONDecodeError as exc:
            bad += 1
            problems.append(f"line {number}: not JSON ({exc})")
        except ValidationError as exc:
            bad += 1
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "line"
            problems.append(f"line {number}: {where}: {first['msg']}")
        except ChatlogError as exc:
            bad += 1
            problems.append(f"line {number}: {exc}")
    if bad:
        raise ImportRejected(path, problems, bad)
    return events


async def import_events(
    store: EventStore,
    events: list[NewEvent],
    *,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[int, int]:
    """Append ``events`` (thread by thread, in order), skipping those already in the log.

    Returns ``(imported, already_present)``.
    """
    by_thread: dict[tuple[uuid.UUID, str], list[NewEvent]] = {}
    for ev in events:
        by_thread.setdefault((ev.project, ev.aggregate_id), []).append(ev)
    total = len(events)
    done = 0
    imported = 0
    present = 0
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one_thread(key: tuple[uuid.UUID, str], evs: list[NewEvent]) -> None:
        nonlocal done, imported, present
        async with gate:
            existing = {str(e.id) for e in await store.read_aggregate(key[0], "thread", key[1])}
            fresh = [e for e in evs if str(e.id) not in existing]
            present += len(evs) - len(fresh)
            done += len(evs) - len(fresh)
            for i in range(0, len(fresh), APPEND_BATCH):
                batch = fresh[i:i + APPEND_BATCH]
                results = await store.append(batch)
                imported += sum(1 for r in results if not r.duplicate)
                present += sum(1 for r in results if r.duplicate)
                done += len(batch)
                if on_progress is not None:
                    on_progress(done, total)

    try:
        async with asyncio.TaskGroup() as group:
            for k, v in by_thread.items():
                group.create_task(one_thread(k, v))
    except ExceptionGroup as eg:  # the first failure, as itself (the others were cancelled)
        first: BaseException = eg
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    if on_progress is not None:
        on_progress(total, total)
    return imported, present


async def import_file(
    store: EventStore,
    path: Path,
    namespace: uuid.UUID,
    *,
    on_progress: Callable[[int, int], None] | None = None,
) -> ImportResult:
    """Validate ``path`` entirely, then append its messages; see the module docs."""
    events = await asyncio.to_thread(read_legacy, path, namespace)
    imported, present = await import_events(store, events, on_progress=on_progress)
    return ImportResult(lines=len(events), imported=imported, already_present=present)
