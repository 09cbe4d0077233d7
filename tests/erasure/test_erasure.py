"""Erasure, verified by the bytes: after erasing a thread, then its project, no file
under the data dir (Valkey's AOF, SQLite main/WAL/SHM, the archive) holds the
erased text, and every other project's events are still there, unchanged."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from langgraph.checkpoint.conformance.test_utils import (
    generate_checkpoint,
    generate_config,
    generate_metadata,
)

from chatlog.erasure import Eraser
from chatlog.errors import EventIdReused
from chatlog.events import aggregate_key
from chatlog.eventstore import EmbeddedValkey, EventStore
from chatlog.eventstore.archive import Archive
from chatlog.eventstore.archiver import Archiver, HotWindow
from chatlog.identity import normalize_project_id
from chatlog.integrations.langgraph import ChatlogSaver
from chatlog.projections import Projector
from chatlog.projections.erasure import count_rows
from tests.helpers import message

Entry = tuple[bytes, list[bytes]]


def files_holding(root: Path, needle: str) -> list[str]:
    """Every file under ``root`` whose bytes contain ``needle``; a Parquet file's
    (zstd-compressed: its raw bytes never show the text) decoded values too."""
    raw = needle.encode()
    found = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            try:
                data = path.read_bytes()
            except (FileNotFoundError, IsADirectoryError, OSError):
                continue  # a socket, or a file removed meanwhile
            if raw in data or (data[:4] == b"PAR1" and raw in _decoded(data)):
                found.append(str(path.relative_to(root)))
    return sorted(found)


def _decoded(parquet: bytes) -> bytes:
    table = pq.read_table(pa.BufferReader(parquet))
    return b"\n".join(str(v).encode() if not isinstance(v, bytes) else v
                      for column in table.columns for v in column.to_pylist())


def project_entries(store: EventStore, archive: Archive, project: str) -> Any:
    async def read() -> list[tuple[str, dict[bytes, bytes]]]:
        out = []
        archive.reload()
        for pos, flat in archive.read_flat(0, "0-0", 1_000_000):
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            if fields[b"a"].decode().startswith(f"{project}/"):
                out.append((pos.decode(), fields))
        for pos, fields in await store.redis.xrange(store.keys.log(0)):
            if fields[b"a"].decode().startswith(f"{project}/"):
                out.append((pos.decode(), fields))
        return out
    return read()


async def seal(store: EventStore, archive: Archive, count: int) -> None:
    """Move the oldest ``count`` events of partition 0 into one archive segment."""
    entries = await store.read_flat(0, "0-0", count + 1)
    archive.publish(archive.stage(0, entries[:count], row_group_rows=8))
    await store.trim(0, entries[count][0].decode())


async def test_erase_thread_then_project_leaves_no_byte(
    valkey_factory: Callable[..., EmbeddedValkey], tmp_path: Path, short_tmp: Path
) -> None:
    data = short_tmp / f"d{uuid.uuid4().hex[:8]}"
    server = valkey_factory(data / "valkey")
    store = await EventStore.open(server.url)
    archive = Archive.open(str(data / "archive"))
    thread_marker = secrets.token_hex(32)
    project_marker = secrets.token_hex(32)
    blog = normalize_project_id("Blog").key
    shop = normalize_project_id("Shop").key
    ids = []
    try:
        for round_ in range(3):
            for t in ("t1", "t2", "t3"):
                marker = thread_marker if t == "t1" else project_marker
                eid = uuid.uuid4()
                ids.append((t, eid))
                await store.append_one(message("Blog", t, f"round {round_} {marker}",
                                               event_id=eid))
                await store.append_one(message("Shop", t, f"shop {round_} {t}"))
        # A LangGraph checkpoint of the project, its channel values holding the marker.
        saver = ChatlogSaver(store, project="Blog")
        config = generate_config("graph-1")
        saved = await saver.aput(config, generate_checkpoint(channel_values={"m": project_marker}),
                                 generate_metadata(step=0), {"m": 1})
        await saver.aput_writes(saved, [("m", project_marker)], "task-0")
        projector = Projector(store, data / "readmodel.sqlite")
        await projector.open()
        await projector.catch_up()
        await seal(store, archive, 10)  # some of each project in the archive, the rest hot

        async def applied(partition: int, position: str) -> None:
            await projector.catch_up()

        eraser = Eraser(store, archive=archive, read_models=[projector.path],
                        wait_applied=applied)
        shop_before = await project_entries(store, archive, str(shop))
        assert files_holding(data, thread_marker), "the test must see the marker first"

        report = await eraser.erase(blog, "Blog", "t1", requested_by="test")
        assert report.state == "done" and report.finished_at is not None
        assert report.events_erased["redis"] + report.events_erased["archive"] == 3
        assert report.events_erased["archive"] >= 1 and report.aof_rewrites == 1
        assert report.read_model_rows == 4  # 3 messages and the thread
        assert files_holding(data, thread_marker) == []
        assert files_holding(data, project_marker)  # the other threads are still there
        # A retried append with an erased id writes nothing back: the same content is
        # a duplicate (of an erased position), other content a conflict.
        t1_id = next(e for t, e in ids if t == "t1")
        again = await store.append_one(message("Blog", "t1", f"round 0 {thread_marker}",
                                               event_id=t1_id))
        assert again.duplicate
        with pytest.raises(EventIdReused):
            await store.append_one(message("Blog", "t1", "other", event_id=t1_id))
        assert files_holding(data / "valkey", thread_marker) == []
        # The thread's history is gone; a new message starts it afresh at version 1.
        assert await store.aggregate_version(blog, "thread", "t1") == 0
        fresh = await store.append_one(message("Blog", "t1", "after erasure"))
        assert fresh.version == 1

        report = await eraser.erase(blog, "Blog", requested_by="test")
        assert report.state == "done"
        assert report.events_erased["redis"] + report.events_erased["archive"] == 9
        await projector.catch_up()
        assert files_holding(data, project_marker) == []
        assert files_holding(data, thread_marker) == []
        assert await project_entries(store, archive, str(shop)) == shop_before
        # Only the two tombstones are left of the project, without content.
        left = await project_entries(store, archive, str(blog))
        assert [f[b"t"] for _, f in left] == [b"erasure.recorded"] * 2
        assert await saver.aget_tuple(saved) is None
        assert [k async for k in store.redis.scan_iter(match=f"*:lg:{blog}:*")] == []
        assert await eraser.pending() == []
        assert not await store.redis.exists(
            store.keys.aggregate_index(0, aggregate_key(blog, "thread", "t2")))
        await projector.stop()
    finally:
        await store.close()


async def test_erase_a_langgraph_threads_checkpoints(store: EventStore, tmp_path: Path,
                                                     session_valkey: EmbeddedValkey) -> None:
    """The integrations' entry point: the aggregates under a prefix (one LangGraph
    thread's checkpoints) go from every tier; the saver's other thread stays."""
    marker = secrets.token_hex(32)
    saver = ChatlogSaver(store, project="Graphs")
    gone = await saver.aput(generate_config("g-1"),
                            generate_checkpoint(channel_values={"m": marker}),
                            generate_metadata(step=0), {"m": 1})
    kept = await saver.aput(generate_config("g-2"), generate_checkpoint(channel_values={"m": 2}),
                            generate_metadata(step=0), {"m": 1})
    key = normalize_project_id("Graphs")
    archive = Archive.open(str(tmp_path / "archive"))
    report = await Eraser(store, archive=archive).erase_aggregates(
        key.key, key.display, "langgraph", "g-1/")
    assert report.scope == "aggregates" and report.events_erased["redis"] >= 1
    assert files_holding(session_valkey.dir, marker) == []
    assert await saver.aget_tuple(kept) is not None
    assert await saver.aget_tuple(gone) is None


async def test_a_thread_wholly_archived_starts_afresh(
    valkey_factory: Callable[..., EmbeddedValkey], short_tmp: Path
) -> None:
    """A thread whose events all left Redis for the archive has no index list there,
    only its version: the erasure drops that too, so the next message is version 1."""
    data = short_tmp / f"w{uuid.uuid4().hex[:8]}"
    store = await EventStore.open(valkey_factory(data / "valkey").url)
    archive = Archive.open(str(data / "archive"))
    blog = normalize_project_id("Blog").key
    marker = secrets.token_hex(32)
    try:
        for i in range(3):
            await store.append_one(message("Blog", "t1", f"{i} {marker}"))
        await store.append_one(message("Blog", "t2", "stays hot"))
        [sealed] = await Archiver(store, archive, HotWindow(events=1, seconds=0, bytes=0)
                                  ).run_pass([0])
        assert sealed.archived == 3
        assert not await store.redis.exists(
            store.keys.aggregate_index(0, aggregate_key(blog, "thread", "t1")))
        report = await Eraser(store, archive=archive).erase(blog, "Blog", "t1")
        assert report.events_erased == {"redis": 0, "archive": 3}
        assert files_holding(data, marker) == []
        assert await store.aggregate_version(blog, "thread", "t1") == 0
        fresh = await store.append_one(message("Blog", "t1", "after erasure"))
        assert fresh.version == 1
        assert await store.aggregate_version(blog, "thread", "t2") == 1
    finally:
        await store.close()


async def test_erasing_an_integrations_aggregates_keeps_the_read_model(
    store: EventStore, tmp_path: Path, session_valkey: EmbeddedValkey
) -> None:
    """The tombstone of an erasure of aggregates under a prefix (a LangGraph thread's
    checkpoints) deletes no conversation rows: the project's threads stay readable."""
    saver = ChatlogSaver(store, project="Graphs")
    await saver.aput(generate_config("g-1"), generate_checkpoint(channel_values={"m": 1}),
                     generate_metadata(step=0), {"m": 1})
    for i in range(3):
        await store.append_one(message("Graphs", "chat", f"message {i}"))
    projector = Projector(store, tmp_path / "readmodel.sqlite")
    await projector.open()
    try:
        await projector.catch_up()
        before = count_rows(projector.path, str(normalize_project_id("Graphs").key), None)
        assert before >= 4  # three messages, the thread, the project
        key = normalize_project_id("Graphs")
        report = await Eraser(store, read_models=[projector.path]).erase_aggregates(
            key.key, key.display, "langgraph", "g-1/")
        assert report.state == "done"
        await projector.catch_up()
        assert count_rows(projector.path, str(key.key), None) == before
    finally:
        await projector.stop()
