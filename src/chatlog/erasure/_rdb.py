"""RDB snapshots after an erasure: removed where they are ours, reported where not.

XDEL only marks a stream entry deleted: its bytes stay in the node's memory (the
stream's listpacks) until the node restarts from its rewritten append-only file,
and an RDB snapshot copies those listpacks as they are. So a snapshot written
before the erasure, or after it by a save point, a ``BGSAVE`` or a replica's full
resynchronisation, may hold erased content.

A node whose data directory lies under the chatlog data dir and persists by its
AOF is ours (the embedded default runs with ``save ""``, so no snapshot is
scheduled): once no snapshot is being written, its dump file (and any temp file
of a killed one) is removed. Nothing is removed on any other node; the report
says, per node, whether an RDB file there may still hold the content and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as rexc

from chatlog.errors import StoreUnavailable
from chatlog.eventstore import EventStore
from chatlog.eventstore.cluster import every_server
from chatlog.eventstore.connection import guard, text


@dataclass(frozen=True, slots=True)
class SnapshotNote:
    """One node's RDB file after an erasure."""

    node: str
    #: The node's dump file (``dir``/``dbfilename``), as the node names it.
    file: str
    #: Whether the erasure removed it (it was under the chatlog data dir).
    removed: bool
    #: Whether an RDB file of this node may still hold erased content.
    may_hold: bool
    why: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def settle_snapshots(store: EventStore, owned: Path | None, erased_at: float,
                           within: float = 300.0) -> list[SnapshotNote]:
    """Remove the dump files of the store's nodes whose directory is under ``owned``
    (the chatlog data dir) and say for every node whether a snapshot may hold
    content erased at ``erased_at`` (Unix time)."""
    nodes, own = await every_server(store.redis)
    try:
        return [await _settle(node, owned, erased_at, within) for node in nodes]
    finally:
        if own:
            for node in nodes:
                await node.aclose()


def _address(node: aioredis.Redis) -> str:
    kw = node.connection_pool.connection_kwargs
    if kw.get("path"):
        return str(kw["path"])
    return f"{kw.get('host', '?')}:{kw.get('port', '?')}"


async def _config(node: aioredis.Redis, name: str) -> str | None:
    try:
        found = await guard(node.config_get(name))
    except rexc.ResponseError:  # CONFIG renamed or disabled: unknown
        return None
    value = found.get(name) if isinstance(found, dict) else None
    return None if value is None else text(value)


async def _settle(node: aioredis.Redis, owned: Path | None, erased_at: float,
                  within: float) -> SnapshotNote:
    address = _address(node)
    directory, name = await _config(node, "dir"), await _config(node, "dbfilename")
    save = await _config(node, "save")
    if directory is None or name is None or save is None:
        return SnapshotNote(address, "?", False, True,
                            "CONFIG is not available: whether snapshots exist is unknown")
    file = os.path.join(directory, name)
    persistence = await guard(node.info("persistence"))
    role = (await guard(node.info("replication"))).get("role", "master")
    aof = bool(int(persistence.get("aof_enabled", 0)))
    if owned is not None and aof and _under(Path(directory), owned):
        await _no_snapshot_running(node, within)
        removed = _remove_dumps(Path(directory), name)
        if save.strip():
            return SnapshotNote(address, file, removed, True,
                                f"save points ({save}) are configured: the next snapshot "
                                "copies the deleted entries until the node restarts")
        return SnapshotNote(address, file, removed, False,
                            "under the data dir, AOF only (save \"\"): "
                            + ("its dump file was removed" if removed else "no dump file"))
    reasons = []
    if save.strip():
        reasons.append(f"save points ({save}) schedule snapshots, which copy deleted "
                       "entries until the node restarts from its rewritten AOF")
    last = int(persistence.get("rdb_last_save_time", 0))
    saves = int(persistence.get("rdb_saves", 0))
    if saves:
        when = "after" if last >= erased_at else "before"
        reasons.append(f"{saves} snapshot(s) written since the node started, the last "
                       f"(LASTSAVE {last}) {when} the erasure")
    if role != "master" and (await _config(node, "repl-diskless-load")) in ("disabled", None):
        reasons.append("as a replica it writes each full resynchronisation's snapshot "
                       "to its dump file")
    if not aof:
        reasons.append("it persists by RDB only")
    if reasons:
        return SnapshotNote(address, file, False, True,
                            "; ".join(reasons) + f": remove or replace {file}, or restart "
                            "the node from its AOF")
    return SnapshotNote(address, file, False, False,
                        "no save points, no snapshot since the node started, AOF on")


async def owned_pid(node: aioredis.Redis, owned: Path | None) -> int | None:
    """The process id of ``node`` when it is ours (its directory under ``owned``, its
    process on this machine); else None."""
    if owned is None:
        return None
    directory = await _config(node, "dir")
    if directory is None or not _under(Path(directory), owned):
        return None
    pid = int((await guard(node.info("server"))).get("process_id", 0))
    return pid if pid and _running_here(pid) else None


def _running_here(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _under(directory: Path, owned: Path) -> bool:
    try:
        return directory.resolve().is_relative_to(owned.resolve()) and directory.is_dir()
    except OSError:
        return False


async def _no_snapshot_running(node: aioredis.Redis, within: float) -> None:
    deadline = time.monotonic() + within
    while int((await guard(node.info("persistence"))).get("rdb_bgsave_in_progress", 0)):
        if time.monotonic() > deadline:
            raise StoreUnavailable("a snapshot (BGSAVE) did not finish in time")
        await asyncio.sleep(0.05)


def _remove_dumps(directory: Path, name: str) -> bool:
    """Remove the dump file and temp files of killed snapshots; whether any was there."""
    doomed = [directory / name, *directory.glob("temp-*.rdb")]
    removed = False
    for path in doomed:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed = True
    if removed:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return removed
