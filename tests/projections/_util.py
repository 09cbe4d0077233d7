"""Helpers for the projection tests: dump a read model table by table."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from chatlog.eventstore import EventStore
from tests.helpers import message

#: Rows that legitimately differ between two builds of the same log.
IGNORED_TABLES = {"projector_meta"}


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows (sorted), except the projector's metadata."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            " ORDER BY name")]
        return {
            t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr)
            for t in tables if t not in IGNORED_TABLES
        }
    finally:
        conn.close()


def checkpoints(tables: dict[str, list[tuple[Any, ...]]]) -> list[tuple[Any, ...]]:
    """Take the checkpoints out of a :func:`dump`: each partition's position, without
    its ``events`` count. That count is the projector's lag cursor against the stream's
    lifetime ``entries-added`` (which counts XDEL'd entries): a live projector counts
    the events it applied, erased later or not, and misses those erased before it read
    them; a rebuild counts what the log holds. Neither can know the other's figure
    after an erasure, so only positions are compared (every other column is)."""
    return [row[:2] for row in tables.pop("projector_checkpoints")]


def indexes(path: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%'")}
    finally:
        conn.close()


async def fill(store: EventStore, projects: list[str], threads: int, per_thread: int,
               batch: int = 50) -> int:
    """Append ``per_thread`` messages to each of ``threads`` threads of every project, fast.

    Batches of one thread's messages, many in flight at once (group-committed).
    Returns how many events were appended.
    """
    calls = []
    for name in projects:
        for t in range(threads):
            thread = f"thread-{t}"
            for start in range(0, per_thread, batch):
                n = min(batch, per_thread - start)
                calls.append([message(name, thread, f"{name}/{thread}/{start + i}")
                              for i in range(n)])
    total = 0
    for i in range(0, len(calls), 100):
        results = await asyncio.gather(*(store.append(c) for c in calls[i:i + 100]))
        total += sum(len(r) for r in results)
    return total
