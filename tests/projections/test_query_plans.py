"""Every query of the read API is served by an index (seed task 1.7): no table scans, no sorts.

Checked on a model built both ways (incremental and rebuilt), since a
rebuild creates its indexes after loading.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from chatlog.eventstore import EventStore
from chatlog.projections.conversations import ConversationsProjection
from chatlog.projections.projector import Projector
from chatlog.projections.queries import QUERIES, ReadModel
from chatlog.projections.rebuild import build
from tests.projections._util import fill

ARGS: dict[str, tuple[object, ...]] = {
    "list_projects": (),
    "get_project": ("p",),
    "list_threads": ("p", 10),
    "list_threads_after": ("p", 1, 2, 10),
    "get_thread": ("p", "t"),
    "thread_exists": ("p", "t"),
    "list_messages": ("p", "t", 0, 10),
    "checkpoint": (),
}
#: Tables small by construction (one row per partition): a scan is the plan.
SMALL_TABLES = {"projector_checkpoints"}


def plan(conn: sqlite3.Connection, sql: str, args: tuple[object, ...]) -> list[str]:
    return [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", args)]


def assert_indexed(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        assert set(ARGS) == set(QUERIES), "a new query needs a plan check"
        for name, sql in QUERIES.items():
            steps = plan(conn, sql, ARGS[name])
            table = sql.split(" FROM ", 1)[1].split()[0]
            for step in steps:
                assert "TEMP B-TREE" not in step, f"{name} sorts without an index: {steps}"
                if table in SMALL_TABLES:
                    continue
                assert "INDEX" in step or "PRIMARY KEY" in step, (
                    f"{name} does not use an index: {steps}")
                assert step.startswith("SEARCH") or name == "list_projects", (
                    f"{name} scans: {steps}")
    finally:
        conn.close()


@pytest.mark.parametrize("how", ["incremental", "rebuilt"])
async def test_every_query_uses_an_index(store: EventStore, tmp_path: Path, how: str) -> None:
    await fill(store, ["Plan-A", "Plan-B"], threads=5, per_thread=4)
    path = tmp_path / f"{how}.sqlite"
    if how == "incremental":
        pj = Projector(store, path, [ConversationsProjection()])
        try:
            await pj.catch_up()
        finally:
            await pj.stop()
    else:
        await build(store, path, [ConversationsProjection()])
    assert_indexed(path)


def test_an_empty_model_is_indexed_too(tmp_path: Path) -> None:
    model = ReadModel(tmp_path / "empty.sqlite")
    try:
        assert model.list_projects() == []  # creates the empty model
    finally:
        model.close()
    assert_indexed(tmp_path / "empty.sqlite")
