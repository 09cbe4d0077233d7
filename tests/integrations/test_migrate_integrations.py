"""``chatlog migrate`` carries the integrations' events; reindex rebuilds their index keys."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from eventsourcing.persistence import StoredEvent, Tracking
from eventsourcing.utils import Environment
from langgraph.checkpoint.conformance.test_utils import (
    generate_checkpoint,
    generate_config,
    generate_metadata,
)

from chatlog.eventstore import EventStore
from chatlog.eventstore.migration import migrate
from chatlog.integrations.eventsourcing import ChatlogFactory
from chatlog.integrations.langgraph import ChatlogSaver


async def test_a_migrated_langgraph_thread_reads_back_after_reindex(
    store_factory: Callable[..., object],
) -> None:
    source: EventStore = await store_factory(prefix=f"a{uuid.uuid4().hex[:8]}")  # type: ignore[misc]
    target: EventStore = await store_factory(prefix=f"b{uuid.uuid4().hex[:8]}")  # type: ignore[misc]
    saver = ChatlogSaver(source, project="Agents")
    parent = None
    for step in range(3):
        config = generate_config("t-1")
        if parent:
            config["configurable"]["checkpoint_id"] = parent["configurable"]["checkpoint_id"]
        parent = await saver.aput(config, generate_checkpoint(channel_values={"n": step}),
                                  generate_metadata(step=step, run_id="run-1"), {"n": step + 1})
    await saver.aput_writes(parent, [("n", 99)], "task-a")
    await migrate(source, target)

    moved = ChatlogSaver(target, project="Agents")
    assert await moved.aget_tuple(generate_config("t-1")) is None  # no index keys yet
    assert await moved.areindex() == 4
    tup = await moved.aget_tuple(generate_config("t-1"))
    assert tup is not None and tup.checkpoint["channel_values"] == {"n": 2}
    assert tup.pending_writes == [("task-a", "n", 99)]
    assert len([t async for t in moved.alist(generate_config("t-1"))]) == 3
    await moved.adelete_for_runs(["run-1"])
    assert await moved.aget_tuple(generate_config("t-1")) is None


def test_a_migrated_eventsourcing_application_reads_back_after_reindex(
    redis_url: str,
) -> None:
    a, b = f"a{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}"

    def factory(prefix: str) -> ChatlogFactory:
        return ChatlogFactory(Environment("Bank", {"CHATLOG_REDIS_URL": redis_url,
                                                   "CHATLOG_KEY_PREFIX": prefix}))

    oid = uuid.uuid4()
    f = factory(a)
    try:
        f.process_recorder().insert_events(
            [StoredEvent(originator_id=oid, originator_version=v, topic="t", state=b"s%d" % v)
             for v in range(3)], tracking=Tracking("Up", 5))
    finally:
        f.close()

    async def copy() -> None:
        source = await EventStore.open(redis_url, prefix=a)
        target = await EventStore.open(redis_url, prefix=b)
        try:
            await migrate(source, target)
        finally:
            await source.close()
            await target.close()

    asyncio.run(copy())
    f = factory(b)
    try:
        assert f.datastore.reindex() == 4
        recorder = f.process_recorder()
        assert [e.state for e in recorder.select_events(oid)] == [b"s0", b"s1", b"s2"]
        assert [n.id for n in recorder.select_notifications(None, 10)] == [1, 2, 3]
        assert recorder.max_notification_id() == 3
        assert recorder.max_tracking_id("Up") == 5
        assert recorder.insert_events(
            [StoredEvent(originator_id=oid, originator_version=3, topic="t", state=b"")]
        ) == [4]
    finally:
        f.close()
