"""Rebuild: equals the incremental model, switches atomically under a running projector,
and an interrupted rebuild (kill -9) leaves the live model untouched."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from chatlog.errors import ChatlogError
from chatlog.eventstore import EventStore
from chatlog.identity import normalize_project_id
from chatlog.projections.conversations import ConversationsProjection
from chatlog.projections.projector import Projector
from chatlog.projections.queries import ReadModel
from chatlog.projections.rebuild import RebuildRunning, build, rebuild, rebuild_lock, rebuild_path
from tests.helpers import eventually, message
from tests.projections._util import dump, fill, indexes


async def incremental(store: EventStore, path: Path) -> None:
    pj = Projector(store, path, [ConversationsProjection()], batch_size=7)
    try:
        await pj.catch_up()
    finally:
        await pj.stop()


@pytest.mark.parametrize("processes", [False, True], ids=["in-process", "child-process"])
async def test_rebuild_equals_incremental(store: EventStore, tmp_path: Path,
                                          processes: bool) -> None:
    await fill(store, ["Blog-Project", "blog-project", "Docs"], threads=4, per_thread=9)
    await store.append_one(message("docs", "thread-0", "last"))
    await incremental(store, tmp_path / "inc.sqlite")
    seen: list[tuple[int, int]] = []
    result = await build(store, tmp_path / "reb.sqlite", [ConversationsProjection()],
                         processes=processes, chunk=10,
                         on_progress=lambda done, total: seen.append((done, total)))
    assert result.events == 3 * 4 * 9 + 1
    assert dump(tmp_path / "inc.sqlite") == dump(result.path)
    assert indexes(tmp_path / "inc.sqlite") == indexes(result.path)
    assert seen[-1] == (result.events, result.events)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


async def test_rebuild_switches_under_a_running_projector(
    store: EventStore, model_path: Path
) -> None:
    """Readers and the live projector follow the switch; nothing is lost or doubled."""
    await fill(store, ["Switch"], threads=3, per_thread=10)
    async with Projector(store, model_path, [ConversationsProjection()], block=0.1) as pj:
        r = await store.append_one(message("Switch", "thread-0", "before the rebuild"))
        await pj.wait_for(r.partition, r.position, 10)
        model = ReadModel(model_path)  # a reader with its connection already open
        try:
            key = normalize_project_id("switch")
            assert model.get_project(key) is not None
            # damage the live model, as a bug would: the rebuild must repair it
            conn = sqlite3.connect(model_path)
            conn.execute("DELETE FROM messages WHERE thread_id = 'thread-1'")
            conn.commit()
            conn.close()
            result = await rebuild(store, model_path, [ConversationsProjection()])
            assert not rebuild_path(model_path).exists()
            # the projector notices the new checkpoint and carries on from it
            after = await store.append_one(message("Switch", "thread-1", "after the rebuild"))
            await pj.wait_for(after.partition, after.position, 10)
            thread1 = model.list_messages(key, "thread-1").messages
            assert len(thread1) == 11 and thread1[-1].content == "after the rebuild"
            assert result.events == 31
        finally:
            model.close()
    check = Path(str(model_path) + ".check")
    await build(store, check, [ConversationsProjection()])
    assert dump(model_path) == dump(check)
    conn = sqlite3.connect(model_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        conn.close()


async def test_one_rebuild_at_a_time(store: EventStore, model_path: Path) -> None:
    with rebuild_lock(model_path):
        with pytest.raises(RebuildRunning, match="another rebuild"):
            await rebuild(store, model_path, [ConversationsProjection()])


async def test_a_trimmed_log_cannot_be_rebuilt_silently(store: EventStore,
                                                        model_path: Path) -> None:
    for i in range(3):
        await store.append_one(message("Trim", "thread-1", str(i)))
    head = await store.head(0)
    await store.trim(0, head)
    with pytest.raises(ChatlogError, match="trimmed"):
        await rebuild(store, model_path, [ConversationsProjection()])
    assert not _exists(model_path)


def _exists(path: Path) -> bool:
    return path.exists()


def _chatlog(*args: str) -> list[str]:
    return [sys.executable, "-c", "from chatlog.cli import main; main()", *args]


async def _interrupt_rebuild(env: dict[str, str], temp: Path,
                             sig: signal.Signals) -> tuple[int, bytes]:
    """Start ``chatlog rebuild`` and send ``sig`` once it has created its new file."""
    proc = await asyncio.create_subprocess_exec(
        *_chatlog("rebuild", "--quiet"), env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        await eventually(lambda: proc.returncode is not None or _exists(temp), timeout=60,
                         interval=0.002, what="the rebuild starting")
        assert proc.returncode is None, "the rebuild finished before it could be interrupted"
    finally:
        os.kill(proc.pid, sig)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, err


async def test_interrupted_rebuild_leaves_the_live_model_untouched(
    store: EventStore, model_path: Path, redis_url: str, key_prefix: str
) -> None:
    """Ctrl-C and kill -9 mid-rebuild: the live model is untouched; the next one starts clean."""
    await fill(store, ["Kill-A", "Kill-B"], threads=20, per_thread=500, batch=100)
    live = Projector(store, model_path, [ConversationsProjection()], batch_size=5000)
    try:
        await live.catch_up()
    finally:
        await live.stop()
    await store.append_one(message("Kill-A", "thread-0", "not yet in the live model"))
    before = dump(model_path)
    env = {**os.environ, "CHATLOG_REDIS_URL": redis_url, "CHATLOG_KEY_PREFIX": key_prefix,
           "CHATLOG_DATA_DIR": str(model_path.parent)}
    temp = rebuild_path(model_path)

    # Ctrl-C: exit 130 with one line, its new file removed, the live model untouched
    code, err = await _interrupt_rebuild(env, temp, signal.SIGINT)
    assert code == 130, err
    assert err.decode().strip() == "interrupted"
    assert not _exists(temp)
    assert dump(model_path) == before

    # kill -9: no cleanup possible; the live model is untouched all the same
    code, _ = await _interrupt_rebuild(env, temp, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert dump(model_path) == before
    assert _exists(temp)  # the leftover the next rebuild removes
    result = await rebuild(store, model_path, [ConversationsProjection()])
    assert not _exists(temp)
    assert result.events == 2 * 20 * 500 + 1
    check = Path(str(model_path) + ".check")
    await build(store, check, [ConversationsProjection()])
    assert dump(model_path) == dump(check) != before


async def test_every_default_projection_rebuilds_equal(store: EventStore, tmp_path: Path) -> None:
    """The plain path (decoded events, ``apply``) beside the bulk one, in one rebuild."""
    from datetime import UTC, datetime, timedelta

    from chatlog.events import NewEvent, WorkflowCreated, WorkflowStarted
    from chatlog.projections.registry import default_projections

    key = normalize_project_id("Flows")
    for i in range(5):
        wf = f"wf-{i}"
        await store.append_one(NewEvent.of(
            WorkflowCreated(name="build", start_timeout=300,
                            deadline=datetime.now(UTC) + timedelta(seconds=300)),
            project=key.key, project_name=key.display, aggregate_type="workflow",
            aggregate_id=wf))
        await store.append_one(message("Flows", f"thread-{i % 2}", f"note {i}"))
        if i % 2:
            await store.append_one(NewEvent.of(
                WorkflowStarted(), project=key.key, project_name=key.display,
                aggregate_type="workflow", aggregate_id=wf))
    pj = Projector(store, tmp_path / "inc.sqlite", default_projections(), batch_size=3)
    try:
        await pj.catch_up()
    finally:
        await pj.stop()
    result = await build(store, tmp_path / "reb.sqlite", default_projections(), chunk=4)
    inc = dump(tmp_path / "inc.sqlite")
    assert inc == dump(result.path)
    assert {"messages", "threads", "projects"} <= set(inc)
    assert len(default_projections()) >= 2 and any(len(rows) == 5 for t, rows in inc.items()
                                                   if t.startswith("workflow"))
