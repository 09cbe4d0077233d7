"""The read model's schema version: stored in the file, checked on open, fixed by a rebuild."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from chatlog.errors import ReadModelOutdated
from chatlog.eventstore import EventStore
from chatlog.projections import _db
from chatlog.projections.projector import Projector
from chatlog.projections.queries import ReadModel
from chatlog.projections.rebuild import rebuild
from tests.helpers import message


def _version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def _stamp(path: Path, version: int) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute(f"PRAGMA user_version = {version}")
        conn.commit()
    finally:
        conn.close()


async def test_a_new_read_model_records_its_schema(store: EventStore, model_path: Path) -> None:
    async with Projector(store, model_path):
        pass
    assert _version(model_path) == _db.READ_MODEL_SCHEMA


async def test_an_older_read_model_is_refused_with_the_command_that_fixes_it(
    store: EventStore, model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.append([message("Schema", "t-1", "hello")])
    async with Projector(store, model_path) as projector:
        await projector.catch_up()
    _stamp(model_path, 3)
    monkeypatch.setattr(_db, "READ_MODEL_SCHEMA", 4)
    with pytest.raises(ReadModelOutdated) as caught:
        await Projector(store, model_path).open()
    assert str(caught.value).startswith(
        "read model schema 3, this chatlog needs 4: run `chatlog rebuild`")
    read_model = ReadModel(model_path)
    try:
        with pytest.raises(ReadModelOutdated):
            read_model.list_projects()
    finally:
        read_model.close()
    # The rebuild builds a file of the schema this chatlog needs, and it opens again.
    await rebuild(store, model_path)
    assert _version(model_path) == 4
    async with Projector(store, model_path) as projector:
        await projector.catch_up()
    read_model = ReadModel(model_path)
    try:
        assert [p.name for p in read_model.list_projects()] == ["Schema"]
    finally:
        read_model.close()


async def test_a_newer_read_model_is_refused_too(store: EventStore, model_path: Path) -> None:
    async with Projector(store, model_path):
        pass
    _stamp(model_path, _db.READ_MODEL_SCHEMA + 1)
    with pytest.raises(ReadModelOutdated, match="run `chatlog rebuild`"):
        await Projector(store, model_path).open()


async def test_a_file_from_before_versions_counts_as_schema_1(
    store: EventStore, model_path: Path
) -> None:
    async with Projector(store, model_path):
        pass
    _stamp(model_path, 0)  # what chatlog wrote before it stored the version
    async with Projector(store, model_path):
        pass
    assert _version(model_path) == 1 == _db.READ_MODEL_SCHEMA
