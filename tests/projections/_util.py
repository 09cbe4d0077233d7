"""Helpers for the projection tests: dump a read model table by table."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

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


def indexes(path: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%'")}
    finally:
        conn.close()
