"""Messages appended after an erasure's tombstone stay in the read model (an adversarial
pass found them deleted: by the projector, when one batch held the erased messages,
the tombstone and new ones, and by the eraser's purge of the read model afterwards,
which deleted the scope's rows whatever their position)."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path

from chatlog.erasure import Eraser
from chatlog.events import ErasureRecorded, NewEvent, aggregate_key
from chatlog.eventstore import EventStore
from chatlog.identity import normalize_project_id
from chatlog.projections import Projector
from tests.helpers import message


def _messages(path: Path, thread: str) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT version, content FROM messages WHERE thread_id = ?"
                            " ORDER BY version", (thread,)).fetchall()


def _thread_count(path: Path, thread: str) -> int | None:
    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT message_count FROM threads WHERE thread_id = ?",
                           (thread,)).fetchone()
    return None if row is None else int(row[0])


async def test_one_batch_with_erased_messages_the_tombstone_and_new_ones(
    store: EventStore, tmp_path: Path
) -> None:
    """The projector applies a batch in log order across the tombstone: the messages
    before it are deleted, the ones after it (versions from 1 again) are kept. It
    applied every message first and the tombstone last: the new ones were deleted,
    or the batch failed on (thread, version 1) twice and the read model stalled."""
    blog = normalize_project_id("Blog")
    for text in ("old 1", "old 2"):
        await store.append_one(message("Blog", "t1", text))
    erasure_id = str(uuid.uuid4())
    tombstone = ErasureRecorded(
        erasure_id=erasure_id, scope="thread", thread_id="t1", aggregates=None, events=2,
        requested_by="test", requested_at=datetime.now(UTC))
    await store.append_one(NewEvent.of(tombstone, project=blog.key, project_name="Blog",
                                       aggregate_type="erasure", aggregate_id=erasure_id))
    # the eraser drops the thread's version: its next message starts a fresh history
    await store.redis.hdel(store.keys.versions(0), aggregate_key(blog.key, "thread", "t1"))
    for text in ("new 1", "new 2"):
        await store.append_one(message("Blog", "t1", text))
    await store.append_one(message("Blog", "t2", "other thread"))

    projector = Projector(store, tmp_path / "readmodel.sqlite")
    await projector.open()
    try:
        await projector.catch_up()  # all seven events in one batch
        assert projector.failing == 0
        assert _messages(projector.path, "t1") == [(1, "new 1"), (2, "new 2")]
        assert _thread_count(projector.path, "t1") == 2
        assert _messages(projector.path, "t2") == [(1, "other thread")]
    finally:
        await projector.stop()


async def test_the_erasure_keeps_messages_appended_while_it_ran(
    store: EventStore, tmp_path: Path
) -> None:
    """The eraser purges the read model after the projector has applied the tombstone;
    messages appended meanwhile must not go with the erased ones."""
    blog = normalize_project_id("Blog")
    for text in ("old 1", "old 2"):
        await store.append_one(message("Blog", "t1", text))
    projector = Projector(store, tmp_path / "readmodel.sqlite")
    await projector.open()
    try:
        await projector.catch_up()

        async def applied(partition: int, position: str) -> None:
            await projector.catch_up()  # the tombstone is applied...
            await store.append_one(message("Blog", "t1", "while erasing"))
            await projector.catch_up()  # ...and a message after it, before the purge

        eraser = Eraser(store, read_models=[projector.path], wait_applied=applied)
        report = await eraser.erase(blog.key, "Blog", "t1", requested_by="test")
        assert report.state == "done"
        assert _messages(projector.path, "t1") == [(1, "while erasing")]
        assert _thread_count(projector.path, "t1") == 1
    finally:
        await projector.stop()
