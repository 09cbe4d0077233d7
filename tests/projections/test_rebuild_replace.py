"""``chatlog rebuild`` with no ``chatlog serve`` on the data dir renames the new model over
the live one (no copy through the live file's WAL); with a server owning the data
dir it copies into the live file as before. Either way the result equals an
incremental build, and nothing of the old model's journal survives."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path

from chatlog.eventstore import EventStore
from chatlog.eventstore.owner import DataDirLock
from chatlog.projections.conversations import ConversationsProjection
from chatlog.projections.projector import Projector
from chatlog.projections.rebuild import build, rebuild
from chatlog.projections.registry import default_projections
from tests.helpers import message
from tests.projections._util import dump


async def _cli_rebuild(env: dict[str, str]) -> int:
    """``chatlog rebuild -q`` in a child process (it installs signal handlers); its exit
    code."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chatlog", "rebuild", "-q", env={**os.environ, **env})
    return await proc.wait()


def _wal_bytes(path: Path) -> int:
    try:
        return os.stat(f"{path}-wal").st_size
    except FileNotFoundError:
        return 0


async def _incremental(store: EventStore, path: Path) -> None:
    pj = Projector(store, path, [ConversationsProjection()])
    try:
        await pj.catch_up()
    finally:
        await pj.stop()


async def test_rebuild_as_sole_user_renames_over_the_live_model(store: EventStore,
                                                                tmp_path: Path) -> None:
    live = tmp_path / "readmodel.sqlite"
    for i in range(30):
        await store.append_one(message("Replace", f"t{i % 4}", f"m{i}"))
    await _incremental(store, live)
    await store.append_one(message("Replace", "t0", "after the live model"))
    inode = os.stat(live).st_ino

    await rebuild(store, live, [ConversationsProjection()],
                  sole_user=lambda: contextlib.nullcontext(True))
    assert os.stat(live).st_ino != inode  # renamed over it, not copied into it
    assert _wal_bytes(live) == 0
    check = tmp_path / "check.sqlite"
    await build(store, check, [ConversationsProjection()])
    assert dump(live) == dump(check)
    # the live model still works as one: the projector follows the log on it
    await store.append_one(message("Replace", "t1", "followed"))
    await _incremental(store, live)
    await build(store, check, [ConversationsProjection()])
    assert dump(live) == dump(check)


async def test_the_cli_renames_only_when_no_server_owns_the_data_dir(
        store: EventStore, redis_url: str, key_prefix: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"CHATLOG_REDIS_URL": redis_url, "CHATLOG_KEY_PREFIX": key_prefix,
           "CHATLOG_DATA_DIR": str(data)}
    for i in range(20):
        await store.append_one(message("Cli-Replace", f"t{i % 3}", f"m{i}"))
    first = await _cli_rebuild(env)
    assert first == 0
    live = data / "readmodel.sqlite"
    inode = os.stat(live).st_ino

    # A server owns the data dir (its lock held): the new model is copied into the file.
    owner = DataDirLock(data)
    assert owner.acquire("serve") is None
    try:
        copied = await _cli_rebuild(env)
    finally:
        owner.release()
    assert copied == 0
    assert os.stat(live).st_ino == inode

    # No server: renamed over it.
    await store.append_one(message("Cli-Replace", "t0", "one more"))
    renamed = await _cli_rebuild(env)
    assert renamed == 0
    assert os.stat(live).st_ino != inode
    check = tmp_path / "check.sqlite"
    await build(store, check, default_projections())
    assert dump(live) == dump(check)
