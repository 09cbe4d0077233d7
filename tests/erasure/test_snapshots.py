"""RDB snapshots after an erasure. XDEL leaves the entry's bytes in the stream's
memory, and a snapshot copies them: a dump file under the data dir is removed by
the erasure; one of a server chatlog does not own is reported, not touched."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from pathlib import Path

from chatlog.erasure import Eraser
from chatlog.eventstore import EmbeddedValkey, EventStore
from chatlog.identity import normalize_project_id
from tests.erasure.test_erasure import files_holding
from tests.helpers import eventually, message


async def snapshot(store: EventStore) -> None:
    """A BGSAVE (an operator's, an old save point's), uncompressed so that its bytes
    show the text (LZF would hide it from the byte check, not from a reader)."""
    await store.redis.config_set("rdbcompression", "no")
    before = await store.redis.lastsave()
    await store.redis.bgsave()

    async def written() -> bool:
        info = await store.redis.info("persistence")
        return (not int(info["rdb_bgsave_in_progress"])
                and await store.redis.lastsave() >= before
                and int(info.get("rdb_saves", 0)) > 0)

    await eventually(written, timeout=30, what="the snapshot written")


async def write(store: EventStore, marker: str) -> None:
    for i in range(5):
        await store.append_one(message("Blog", "t1", f"{i} {marker}"))
        await store.append_one(message("Blog", "t2", f"{i} keep"))


async def test_a_dump_under_the_data_dir_is_removed(
    valkey_factory: Callable[..., EmbeddedValkey], short_tmp: Path
) -> None:
    data = short_tmp / f"s{uuid.uuid4().hex[:8]}"
    server = valkey_factory(data / "valkey")  # the embedded default: save "", AOF always
    store = await EventStore.open(server.url)
    marker = secrets.token_hex(32)
    blog = normalize_project_id("Blog")
    try:
        await write(store, marker)
        await snapshot(store)
        assert "valkey/dump.rdb" in files_holding(data, marker), "the test must see it first"
        report = await Eraser(store, data_dir=data).erase(blog.key, blog.display, "t1")
        assert report.state == "done"
        assert files_holding(data, marker) == []  # the AOF dir and the dump file
        [note] = report.snapshots
        assert note["removed"] and not note["may_hold"]
        assert note["file"] == str(server.dir / "dump.rdb")
        left = await store.read_aggregate(blog.key, "thread", "t2")
        assert len(left) == 5
    finally:
        await store.close()


async def test_a_server_with_save_points_is_reported(
    valkey_factory: Callable[..., EmbeddedValkey], short_tmp: Path
) -> None:
    """An external server (its files are not under the data dir) with save points:
    its dump file stays, and the report says it may hold the erased content."""
    data = short_tmp / f"x{uuid.uuid4().hex[:8]}"
    server = valkey_factory(short_tmp / f"ext{uuid.uuid4().hex[:8]}",
                            extra_args=["--save", "3600 1"])
    store = await EventStore.open(server.url)
    marker = secrets.token_hex(32)
    blog = normalize_project_id("Blog")
    try:
        await write(store, marker)
        await snapshot(store)
        report = await Eraser(store, data_dir=data).erase(blog.key, blog.display, "t1")
        [note] = report.snapshots
        assert note["may_hold"] and not note["removed"]
        assert "save points (3600 1)" in note["why"] and "LASTSAVE" in note["why"]
        assert (server.dir / "dump.rdb").exists()  # not ours to remove
        # and the report keeps it (read back from its Redis hash)
        again = await Eraser(store).status(report.erasure_id)
        assert again is not None and again.snapshots == report.snapshots
    finally:
        await store.close()
