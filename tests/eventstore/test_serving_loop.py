"""``chatlog serve`` runs on uvloop where it is installed: the store's lean path works there."""

from __future__ import annotations

import asyncio

import pytest

from chatlog.events import RecordedEvent
from chatlog.eventstore import EventStore
from chatlog.eventstore.lean import LeanConnection
from chatlog.tuning import serving_loop_factory
from tests.helpers import eventually, message


def test_appends_reads_and_tails_work_on_the_serving_loop(redis_url: str,
                                                          key_prefix: str) -> None:
    """uvloop's transports are not ``asyncio.Transport`` subclasses: the lean connection
    refused them (an assertion in ``connection_made``), so no command got through."""
    factory = serving_loop_factory()
    if factory is None:
        pytest.skip("uvloop is not installed")

    async def scenario() -> str:
        conn = LeanConnection.from_url(redis_url)
        store = await EventStore.open(redis_url, prefix=key_prefix)
        try:
            assert await conn.execute("PING") == b"PONG"
            cursor = await store.heads()
            got: list[RecordedEvent] = []

            async def follow() -> None:
                async for batch in store.tail(cursor, block=0.2):
                    got.extend(batch)

            tail = asyncio.create_task(follow())
            results = await asyncio.gather(
                *(store.append_one(message(content=str(i))) for i in range(50)))
            one = await store.append_one(message(content="alone"))
            await eventually(lambda: len(got) >= 51, what="51 events tailed")
            tail.cancel()
            await asyncio.gather(tail, return_exceptions=True)
            assert [e.data["content"] for e in got] == [e.data["content"] for e in
                                                        await store.read(one.partition)]
            assert len({r.position for r in results}) == 50
            return type(asyncio.get_running_loop()).__module__
        finally:
            await store.close()
            await conn.close()

    with asyncio.Runner(loop_factory=factory) as runner:
        assert runner.run(scenario()).startswith("uvloop")
