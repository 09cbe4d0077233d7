"""The lean connection: pipelined replies in order, failures mapped like redis-py's."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis import exceptions as rexc

from chatlog.errors import StoreUnavailable
from chatlog.eventstore import AppendResult, EmbeddedValkey, EventStore
from chatlog.eventstore.connection import never_sent
from chatlog.eventstore.embedded import free_port
from chatlog.eventstore.lean import LeanConnection, LeanPool, ReplyLost, ReplyTimeout
from tests.helpers import eventually, message, open_sockets


async def test_concurrent_replies_come_back_to_their_commands(redis_url: str,
                                                              key_prefix: str) -> None:
    conn = LeanConnection.from_url(redis_url)
    try:
        key = f"{key_prefix}:n"
        await conn.execute("SET", key, "not a number")

        async def one(i: int) -> object:
            if i % 7 == 0:  # an error reply in the middle answers only its own command
                with pytest.raises(rexc.ResponseError):
                    await conn.execute("INCR", key)
                return i
            reply = await conn.execute("ECHO", str(i))
            assert reply == str(i).encode()
            return i

        assert await asyncio.gather(*(one(i) for i in range(3000))) == list(range(3000))
        group = await conn.execute_many([("ECHO", "a"), ("INCR", key), ("ECHO", "b")])
        assert group[0] == b"a" and group[2] == b"b"
        assert isinstance(group[1], rexc.ResponseError)
    finally:
        await conn.close()


async def test_a_cancelled_caller_leaves_the_connection_in_step(redis_url: str,
                                                                key_prefix: str) -> None:
    conn = LeanConnection.from_url(redis_url, timeout=None)
    try:
        slow = asyncio.create_task(
            conn.execute("XREAD", "BLOCK", "300", "STREAMS", f"{key_prefix}:s", "$"))
        await eventually(lambda: conn.in_flight == 1, what="the XREAD sent")
        slow.cancel()
        # the XREAD's late reply is read and dropped; this PING gets its own
        assert await conn.execute("PING") == b"PONG"
        assert await conn.execute("ECHO", "x") == b"x"
    finally:
        await conn.close()


async def test_server_errors_are_redis_py_classes(redis_url: str, key_prefix: str) -> None:
    conn = LeanConnection.from_url(redis_url)
    try:
        with pytest.raises(rexc.NoScriptError):
            await conn.execute("EVALSHA", "0" * 40, 0)
        await conn.execute("SET", f"{key_prefix}:k", "v")
        with pytest.raises(rexc.ResponseError, match="WRONGTYPE"):
            await conn.execute("XADD", f"{key_prefix}:k", "*", "a", "b")
        # EVALSHA of a script the server does not know: loaded, then run
        script = "return ARGV[1]"
        sha = await conn.execute("SCRIPT", "LOAD", script)
        await conn.execute("SCRIPT", "FLUSH")
        assert await conn.evalsha(sha.decode(), script, [], ["hi"]) == b"hi"
    finally:
        await conn.close()


async def test_killed_server_fails_commands_in_flight_then_reconnects(
    valkey_factory: Callable[..., EmbeddedValkey], key_prefix: str
) -> None:
    server = valkey_factory()
    conn = LeanConnection.from_url(server.url, timeout=None)
    try:
        assert await conn.execute("PING") == b"PONG"
        blocked = [asyncio.create_task(
            conn.execute("XREAD", "BLOCK", "0", "STREAMS", f"{key_prefix}:s", "$"))]
        blocked += [asyncio.create_task(conn.execute("PING")) for _ in range(10)]
        await eventually(lambda: conn.in_flight == 11, what="11 commands in flight")
        assert server.pid is not None
        os.kill(server.pid, signal.SIGKILL)
        # Gone means reaped: its sockets are all released. Our connection's EOF alone
        # does not say so (a dying process may release its listening socket after it),
        # and a connect in between lands in the dead listener's backlog: the PING below
        # would then be sent and lost instead of refused.
        await eventually(lambda: server.exit_code() is not None, what="the server reaped")
        for task in blocked:  # sent, never answered: may have been applied
            with pytest.raises(ReplyLost, match="may have been applied"):
                await task
        # nothing to connect to: not sent at all, and it says so
        with pytest.raises(rexc.ConnectionError, match="connecting to") as info:
            await conn.execute("PING")
        assert not isinstance(info.value, ReplyLost)
        server.kill()
        server.start()
        assert await conn.execute("PING") == b"PONG"  # reconnected by the next command
    finally:
        await conn.close()


async def test_no_reply_within_the_timeout(redis_url: str, key_prefix: str) -> None:
    conn = LeanConnection.from_url(redis_url, timeout=0.2)
    try:
        with pytest.raises(ReplyTimeout, match="may have been applied"):
            await conn.execute("XREAD", "BLOCK", "0", "STREAMS", f"{key_prefix}:s", "$")
        assert isinstance(ReplyTimeout("x"), rexc.TimeoutError)
        assert await conn.execute("PING") == b"PONG"  # a fresh connection
    finally:
        await conn.close()


async def test_tcp_with_a_database_number(
    valkey_factory: Callable[..., EmbeddedValkey], key_prefix: str
) -> None:
    server = valkey_factory(port=free_port())
    assert server.url.startswith("redis://")
    conn = LeanConnection.from_url(server.url + "/3")
    try:
        await conn.execute("SET", f"{key_prefix}:db", "3")
        assert await conn.execute("CLIENT", "INFO") is not None
        assert b"db=3" in await conn.execute("CLIENT", "INFO")
    finally:
        await conn.close()


async def test_pool_gives_blocking_callers_their_own_connections(redis_url: str,
                                                                 key_prefix: str) -> None:
    pool = LeanPool(LeanConnection.from_url(redis_url, timeout=None))
    try:
        a, b = pool.acquire(), pool.acquire()
        assert a is not b
        reads = [asyncio.create_task(c.execute("XREAD", "BLOCK", "5000", "STREAMS",
                                               f"{key_prefix}:s", "$")) for c in (a, b)]
        await eventually(lambda: a.in_flight == b.in_flight == 1, what="both blocked")
        writer = pool.acquire()
        await writer.execute("XADD", f"{key_prefix}:s", "*", "f", "v")
        for r in reads:  # both woke: neither blocked the other
            assert (await r)[0][0] == f"{key_prefix}:s".encode()
        await pool.release(a)
        assert pool.acquire() is a
    finally:
        await pool.close()


async def test_an_idle_connection_to_a_restarted_server_is_replaced_not_failed(
    valkey_factory: Callable[..., EmbeddedValkey],
) -> None:
    server = valkey_factory()
    conn = LeanConnection.from_url(server.url)
    try:
        assert await conn.execute("PING") == b"PONG"
        server.kill()  # no turn of the event loop in between: its EOF is not seen yet
        server.start()
        assert await conn.execute("PING") == b"PONG"
    finally:
        await conn.close()


async def test_group_commits_cut_mid_flight_fail_unavailable_and_lose_no_ack(
    valkey_factory: Callable[..., EmbeddedValkey], key_prefix: str
) -> None:
    """The store's lean append connection killed under load (two group commits may be in
    flight): their appends fail with StoreUnavailable, nothing hangs, the next appends
    reconnect, and every acknowledged append is in the log in version order."""
    server = valkey_factory()
    store = await EventStore.open(server.url, prefix=key_prefix)
    admin = aioredis.from_url(server.url)
    acked: list[AppendResult] = []
    failed = 0

    async def writer(n: int) -> None:
        nonlocal failed
        for i in range(40):
            try:
                acked.append(await store.append_one(message(thread_id=f"w{n}", content=str(i))))
            except StoreUnavailable:
                failed += 1

    try:
        writers = asyncio.gather(*(writer(n) for n in range(64)))
        for round_ in range(3):
            await eventually(lambda r=round_: len(acked) >= 300 * (r + 1) or writers.done(),
                             interval=0.002, what="appends acknowledged")
            for client in await admin.client_list():
                if client.get("cmd") in ("evalsha", "eval"):
                    await admin.client_kill_filter(_id=client["id"])
        await asyncio.wait_for(writers, 60)
        stored = await store.read(0, limit=100_000)
    finally:
        await admin.aclose()
        await store.close()
    assert len(acked) + failed == 64 * 40
    by_position = {e.position: e for e in stored}
    for ack in acked:
        assert by_position[ack.position].version == ack.version
    for n in range(64):
        versions = [e.version for e in stored if e.aggregate_id == f"w{n}"]
        assert versions == list(range(1, len(versions) + 1))


async def test_the_store_over_tcp_appends_reads_and_tails(
    valkey_factory: Callable[..., EmbeddedValkey], key_prefix: str
) -> None:
    server = valkey_factory(port=free_port())
    store = await EventStore.open(server.url, prefix=key_prefix)
    try:
        assert store._topology.lean is not None and store._topology.lean.path is None
        results = await asyncio.gather(*(store.append_one(message(content=str(i)))
                                         for i in range(50)))
        assert sorted(r.version for r in results) == list(range(1, 51))
        stored = await store.read(0)  # concurrent appends: any order, versions 1..50
        assert [e.version for e in stored] == list(range(1, 51))
        assert sorted(int(e.data["content"]) for e in stored) == list(range(50))
        tail = store.tail(block=0.2)
        first = await asyncio.wait_for(anext(tail), 10)
        assert first[0].version == 1
        await tail.aclose()  # type: ignore[attr-defined]
    finally:
        await store.close()


async def test_lean_failures_tell_the_outcome_rule_whether_a_command_was_sent(
    valkey_factory: Callable[..., EmbeddedValkey], key_prefix: str
) -> None:
    """A connect failure is 'never sent' (a 503 is the truth); a reply lost or timed
    out is not (the append path resends, else 504)."""
    server = valkey_factory()
    conn = LeanConnection.from_url(server.url, timeout=None)
    try:
        blocked = asyncio.create_task(
            conn.execute("XREAD", "BLOCK", "0", "STREAMS", f"{key_prefix}:s", "$"))
        await eventually(lambda: conn.in_flight == 1, what="the XREAD sent")
        server.kill()
        with pytest.raises(ReplyLost) as lost:
            await blocked
        assert not never_sent(lost.value)
        with pytest.raises(rexc.ConnectionError) as refused:
            await conn.execute("PING")
        assert never_sent(refused.value)
        assert not never_sent(ReplyTimeout("x"))
    finally:
        await conn.close()


def test_content_digest_hashes_the_same_bytes_as_before() -> None:
    """The digest hashed in one buffer stays the per-part digest stored ids were made with."""
    import hashlib

    import orjson

    from chatlog.eventstore._append import content_digest

    for i in range(20):
        ev = message(thread_id=f"t{i}", content="é" * i)
        h = hashlib.blake2b(digest_size=12)
        for part in (ev.type, ev.aggregate, str(ev.schema_version)):
            h.update(part.encode())
            h.update(b"\0")
        h.update(orjson.dumps(ev.data, option=orjson.OPT_SORT_KEYS))
        assert content_digest(ev) == h.hexdigest()


@pytest.mark.parametrize("query, want", [("", 10.0), ("?socket_timeout=2.5", 2.5)])
async def test_the_reply_timeout_is_the_redis_urls_socket_timeout(
    session_valkey: EmbeddedValkey, key_prefix: str, query: str, want: float
) -> None:
    """An operator shortens how long a hung server may keep an append waiting (before
    the outcome check, then 504) with the URL's ``?socket_timeout=``; blocking reads
    keep no timeout whatever the URL says."""
    store = await EventStore.open(session_valkey.url + query, prefix=key_prefix)
    try:
        t = store._topology
        assert t.lean is not None and t.lean.timeout == want
        assert t._lean_reads is not None and t._lean_reads.timeout == want  # type: ignore[attr-defined]
        assert t._lean_tails.acquire().timeout is None  # type: ignore[attr-defined]
        assert t.redis.connection_pool.connection_kwargs["socket_timeout"] == want
        assert t.tail_redis.connection_pool.connection_kwargs["socket_timeout"] is None
        assert (await store.append_one(message())).version == 1
    finally:
        await store.close()



def connected(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


async def test_close_during_a_connect_closes_its_socket() -> None:
    """A connect still in progress when the connection is closed (its caller gone)
    used to finish later into a transport nobody closed: a ResourceWarning at the
    garbage collector's whim, and a socket held open until then."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = [socket.socket() for _ in range(3)]
    for filler in fillers:  # fill the backlog: the next connect waits for an accept
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
    try:
        await eventually(lambda: any(connected(f) for f in fillers), what="the backlog full")
        before = open_sockets()
        conn = LeanConnection(host="127.0.0.1", port=port, connect_timeout=5)
        caller = asyncio.create_task(conn.execute("PING"))
        await eventually(lambda: len(open_sockets() - before) == 1, what="the connect begun")
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        waiter = asyncio.create_task(conn.execute("PING"))  # shares the same connect
        coro: Any = waiter.get_coro()
        await eventually(lambda: coro.cr_await is not None, what="the second caller waiting")
        await conn.close()
        with pytest.raises(rexc.ConnectionError, match="closed while connecting"):
            await waiter
        assert open_sockets() == before
        assert not conn.connected
    finally:
        for filler in fillers:
            filler.close()
        server.close()
