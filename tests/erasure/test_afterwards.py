"""After a project's erasure: an eventsourcing application's records of the project
are gone too, and neither ``migrate`` (to another server) nor a rebuild of the read
model brings any of it back; the tombstone travels with the log."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Callable
from pathlib import Path

from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import Environment

from chatlog.erasure import Eraser
from chatlog.eventstore import EmbeddedValkey, EventStore
from chatlog.eventstore.migration import migrate
from chatlog.identity import normalize_project_id
from chatlog.integrations.eventsourcing import ChatlogFactory
from chatlog.projections import Projector
from chatlog.projections.rebuild import rebuild
from tests.erasure.test_erasure import files_holding
from tests.helpers import message


def record(url: str, marker: str) -> None:
    """An eventsourcing application named like the project stores a marked event."""
    factory = ChatlogFactory(Environment("Blog", {"CHATLOG_REDIS_URL": url}))
    try:
        factory.application_recorder().insert_events([StoredEvent(
            originator_id=uuid.uuid4(), originator_version=1, topic="t:A",
            state=f"state {marker}".encode())])
    finally:
        factory.close()


async def test_nothing_comes_back_through_migrate_or_rebuild(
    valkey_factory: Callable[..., EmbeddedValkey], short_tmp: Path
) -> None:
    data = short_tmp / f"m{uuid.uuid4().hex[:8]}"
    source = valkey_factory(data / "valkey")
    target = valkey_factory(data / "target")
    store = await EventStore.open(source.url)
    copy = await EventStore.open(target.url)
    marker = secrets.token_hex(32)
    blog = normalize_project_id("Blog")
    try:
        for i in range(3):
            await store.append_one(message("Blog", f"t{i}", f"{i} {marker}"))
            await store.append_one(message("Shop", "s1", f"{i} shop"))
        await asyncio.to_thread(record, source.url, marker)
        assert [k async for k in store.redis.scan_iter(match=f"*:es:{blog.key}:*")]
        projector = Projector(store, data / "readmodel.sqlite")
        await projector.open()
        await projector.catch_up()
        assert files_holding(data, marker)

        report = await Eraser(store, read_models=[projector.path]).erase(
            blog.key, blog.display)
        assert report.events_erased["redis"] == 4  # three messages, the recorded event
        await projector.catch_up()
        await projector.stop()
        assert files_holding(data, marker) == []
        assert [k async for k in store.redis.scan_iter(match=f"*:es:{blog.key}:*")] == []

        moved = await migrate(store, copy)
        assert moved.copied == 3 + 1  # Shop's three messages and the tombstone
        await rebuild(store, data / "readmodel.sqlite")
        assert files_holding(data, marker) == []
        left = [e.type for e in await copy.read(0)]
        assert sorted(left) == ["erasure.recorded"] + ["message.appended"] * 3
    finally:
        await store.close()
        await copy.close()
