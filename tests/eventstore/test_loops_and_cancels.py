"""The lean path keeps its loop: on asyncio's loop and on uvloop, cancelled appends
leave every later reply with its own caller, and a store used on a loop other than
its own fails before it sends anything."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from chatlog.errors import OutcomeUnknown, StoreUnavailable
from chatlog.eventstore import EmbeddedValkey, EventStore
from chatlog.eventstore._append_args import AppendResult
from chatlog.tuning import serving_loop_factory
from tests.helpers import eventually, message


def _loops() -> list[object]:
    uvloop = serving_loop_factory()
    return [pytest.param(None, id="asyncio"),
            pytest.param(uvloop, id="uvloop", marks=pytest.mark.skipif(
                uvloop is None, reason="uvloop is not installed"))]


async def _contents(store: EventStore) -> dict[str, tuple[str, str]]:
    """Position -> (event id, content) of everything in the log."""
    found = {}
    for partition in range(store.partitions):
        for event in await store.read(partition, limit=10_000):
            found[event.position] = (str(event.id), event.data["content"])
    return found


@pytest.mark.parametrize("loop_factory", _loops())
def test_cancelled_appends_leave_every_later_reply_with_its_caller(
        redis_url: str, key_prefix: str,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None) -> None:
    """Cancelled while their reply is pending: the one sent from its caller's task (an
    idle shard), ones queued behind it and ones in a group commit in flight."""

    async def scenario() -> None:
        store = await EventStore.open(redis_url, prefix=key_prefix)
        try:
            asked: dict[str, str] = {}
            answered: list[AppendResult] = []
            for round_ in range(6):
                events = [message(thread_id=f"t{round_}-{i % 7}", content=f"{round_}-{i}")
                          for i in range(40)]
                asked.update((str(e.id), e.data["content"]) for e in events)
                tasks = [asyncio.create_task(store.append_one(e)) for e in events]
                for _ in range(round_):  # later rounds cancel later in the group commits
                    await asyncio.sleep(0)
                for task in tasks[round_ % 3::3]:  # the first (sent inline) in round 0, 3
                    task.cancel()
                for result in await asyncio.gather(*tasks, return_exceptions=True):
                    if isinstance(result, asyncio.CancelledError):
                        continue
                    assert isinstance(result, AppendResult), result
                    answered.append(result)
                for i in range(5):  # one at a time: each goes inline after the cancels
                    alone = message(thread_id="alone", content=f"alone {round_}-{i}")
                    asked[str(alone.id)] = alone.data["content"]
                    answered.append(await store.append_one(alone))
            log = await _contents(store)
            for result in answered:
                assert log[result.position] == (result.event_id, asked[result.event_id])
            assert len({r.position for r in answered}) == len(answered)
        finally:
            await store.close()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(scenario())


@pytest.mark.parametrize("loop_factory", _loops())
def test_a_store_used_on_another_loop_fails_before_sending(
        redis_url: str, key_prefix: str,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None) -> None:
    """A store opened in one ``asyncio.run`` and used in the next (a cached store, a
    fixture's loop): the append used to be written and then fail with "Future attached
    to a different loop" (or, before the connection kept its loop, to wait forever for
    a reply no loop reads); now it fails at once, and nothing is written."""

    async def open_and_append() -> EventStore:
        store = await EventStore.open(redis_url, prefix=key_prefix)
        await store.append_one(message(content="first"))
        return store

    async def append_again(store: EventStore) -> None:
        async with asyncio.timeout(30):  # a guard against the old hang, not a wait
            await store.append_one(message(content="second"))

    async def count() -> int:
        fresh = await EventStore.open(redis_url, prefix=key_prefix)
        try:
            return len(await _contents(fresh))
        finally:
            await fresh.close()

    with asyncio.Runner(loop_factory=loop_factory) as first:
        store = first.run(open_and_append())
        try:
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                with pytest.raises(RuntimeError, match="another event loop"):
                    runner.run(append_again(store))
                assert runner.run(count()) == 1
        finally:
            first.run(store.close())  # on its own loop (this one is not running meanwhile)


def test_a_store_used_from_another_thread_s_loop_fails_before_sending(
        redis_url: str, key_prefix: str) -> None:
    """A store on a loop thread (as the integrations' blocking forms make) awaited from
    the caller's own loop: the append used to be written and then fail with "Future
    attached to a different loop" (on main: answered only when something else woke the
    caller's loop)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()

    def on_its_loop(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(30)

    try:
        store = on_its_loop(EventStore.open(redis_url, prefix=key_prefix))
        try:
            on_its_loop(store.append_one(message(content="on its loop")))
            with pytest.raises(RuntimeError, match="another event loop"):
                asyncio.run(asyncio.wait_for(store.append_one(message(content="x")), 30))
            assert len(on_its_loop(_contents(store))) == 1
        finally:
            on_its_loop(store.close())
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


@pytest.mark.parametrize("loop_factory", _loops())
def test_kill_9_and_a_stopped_server_keep_the_outcome_rules(
        valkey_factory: Callable[..., EmbeddedValkey], key_prefix: str,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None) -> None:
    """Appends in flight when the server is killed, and one sent to a server that stopped
    answering (SIGSTOP, ``?socket_timeout=``): acknowledged, or StoreUnavailable, or
    OutcomeUnknown naming the ids; a retry with the same ids lands each event once."""
    server = valkey_factory()

    async def scenario() -> None:
        store = await EventStore.open(server.url + "?socket_timeout=0.3", prefix=key_prefix,
                                      outcome_timeout=0.3)
        lean = store._topology.lean
        assert lean is not None and server.pid is not None
        try:
            events = [message(thread_id=f"k{i % 5}", content=f"k{i}", event_id=uuid.uuid4())
                      for i in range(60)]
            os.kill(server.pid, signal.SIGSTOP)  # so that they are surely in flight
            tasks = [asyncio.create_task(store.append_one(e)) for e in events]
            await eventually(lambda: lean.in_flight > 0, what="appends in flight")
            os.kill(server.pid, signal.SIGKILL)
            await eventually(lambda: server.exit_code() is not None, what="the server reaped")
            for ev, got in zip(events, await asyncio.gather(*tasks, return_exceptions=True),
                               strict=True):
                assert isinstance(got, OutcomeUnknown | StoreUnavailable), got
                if isinstance(got, OutcomeUnknown):
                    assert got.event_ids == [str(ev.id)]
            server.kill()
            server.start()
            again = [await store.append_one(e) for e in events]  # the clients' retries
            ev = message(thread_id="stopped", event_id=uuid.uuid4())
            os.kill(server.pid, signal.SIGSTOP)
            try:
                with pytest.raises(OutcomeUnknown) as info:
                    await store.append_one(ev)
                assert info.value.event_ids == [str(ev.id)]
            finally:
                os.kill(server.pid, signal.SIGCONT)
            again.append(await store.append_one(ev))
            log = await _contents(store)
            assert sorted(i for i, _ in log.values()) == sorted(str(e.id) for e in [*events, ev])
            for result in again:
                assert log[result.position][0] == result.event_id
        finally:
            await store.close()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(scenario())
