"""The eventsourcing recorders' raw connections behave as the redis-py client they replace:
the same replies, error replies as redis-py's classes, connection failures as
ConnectionError, a server restart survived by the next call, AUTH and SELECT."""

from __future__ import annotations

import gc
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from redis import exceptions as rexc

from chatlog.eventstore import EmbeddedValkey
from chatlog.integrations._runtime import sync_client
from chatlog.integrations._wire import WirePool
from tests.helpers import open_sockets


def _pool(url: str) -> WirePool:
    pool = WirePool.of(sync_client(url))
    assert pool is not None
    return pool


def test_replies_and_errors_as_redis_py_gives_them(session_valkey: EmbeddedValkey) -> None:
    pool = _pool(session_valkey.url)
    key = f"wire:{uuid.uuid4().hex}"
    with Redis.from_url(session_valkey.url) as r:
        r.rpush(key, b"a", b"\x00b")
        conn = pool.get_connection()
        try:
            conn.send_packed_command(conn.pack_commands(
                [("LRANGE", key, 0, -1), ("INCR", key), ("LLEN", key)]))
            replies = conn.read_responses(3)
            assert replies[0] == [b"a", b"\x00b"]
            assert isinstance(replies[1], rexc.ResponseError)  # WRONGTYPE, not raised here
            assert replies[2] == 2
            conn.send_command("EVALSHA", "0" * 40, 0)
            with pytest.raises(rexc.NoScriptError):
                conn.read_response()
            conn.send_command("LLEN", key)  # still in step after an error reply
            assert conn.read_response() == 2
        finally:
            pool.release(conn)
        again = pool.get_connection()
        assert again is conn  # reused
        pool.release(again)
    pool.close()
    assert conn.sock is None


def test_a_server_restart_and_a_server_gone(
    valkey_factory: Callable[..., EmbeddedValkey], short_tmp: Path
) -> None:
    server = valkey_factory(short_tmp / f"w{uuid.uuid4().hex[:6]}")
    pool = _pool(server.url)
    conn = pool.get_connection()
    conn.send_command("SET", "k", "v")
    assert conn.read_response() == b"OK"
    pool.release(conn)
    server.stop()
    with pytest.raises(rexc.ConnectionError, match="Error connecting"):
        pool.get_connection()  # the idle one is seen closed; a new one cannot connect
    server.start()
    conn = pool.get_connection()
    conn.send_command("PING")
    assert conn.read_response() == b"PONG"
    pool.release(conn)
    pool.close()
    assert conn.sock is None  # closed with the pool, not kept


def test_auth_and_database_from_the_url(
    valkey_factory: Callable[..., EmbeddedValkey], short_tmp: Path
) -> None:
    server = valkey_factory(short_tmp / f"a{uuid.uuid4().hex[:6]}")
    with Redis.from_url(server.url) as r:
        r.config_set("requirepass", "s3cret")
    url = server.url
    if url.startswith("unix://"):
        authed = f"unix://:s3cret@{url.removeprefix('unix://')}?db=2"
    else:
        authed = url.replace("redis://", "redis://:s3cret@", 1).rstrip("/") + "/2"
    pool = _pool(authed)
    conn = pool.get_connection()
    conn.send_command("SET", "in-db-2", "x")
    assert conn.read_response() == b"OK"
    pool.release(conn)
    with Redis.from_url(authed) as r:
        assert r.get("in-db-2") == b"x"
    with Redis.from_url(authed.replace("db=2", "db=0").replace("/2", "/0")) as r:
        assert r.get("in-db-2") is None
    anonymous = _pool(url).get_connection()
    anonymous.send_command("PING")
    with pytest.raises(rexc.AuthenticationError):
        anonymous.read_response()
    anonymous.disconnect()
    with pytest.raises(rexc.AuthenticationError):
        _pool(authed.replace("s3cret", "wrong")).get_connection()
    pool.close()


def test_a_full_pool_makes_callers_wait_not_open_more(session_valkey: EmbeddedValkey) -> None:
    base = _pool(session_valkey.url)
    pool = WirePool(path=base.path, host=base.host, port=base.port, size=1, wait=0.05)
    first = pool.get_connection()
    with pytest.raises(rexc.ConnectionError, match="free within"):
        pool.get_connection()  # the one slot is taken: waits, then says so
    pool.release(first)
    again = pool.get_connection()
    assert again is first
    again.disconnect()  # a failed connection still gives its slot back
    pool.release(again)
    fresh = pool.get_connection()
    assert fresh is not first
    pool.release(fresh)
    pool.close()


def test_many_replies_over_several_reads_stay_in_order_and_in_step(
    session_valkey: EmbeddedValkey,
) -> None:
    # read_responses takes the replies already received in one loop: replies that
    # arrive over several recv calls (here ~300 KB), error replies among them, come
    # back in order, exactly as many as asked, and the next command reads its own reply
    pool = _pool(session_valkey.url)
    key = f"wire:{uuid.uuid4().hex}"
    with Redis.from_url(session_valkey.url) as r:
        r.rpush(key, *[b"x" * 100] * 1000)
        conn = pool.get_connection()
        try:
            commands: list[tuple[object, ...]] = []
            for i in range(30):
                commands.append(("LRANGE", key, 0, -1))
                commands.append(("INCR", key) if i % 3 == 0 else ("ECHO", f"e{i}"))
            conn.send_packed_command(conn.pack_commands(commands))
            replies = conn.read_responses(len(commands))
            assert len(replies) == 60
            for i in range(30):
                assert replies[2 * i] == [b"x" * 100] * 1000
                if i % 3 == 0:
                    assert isinstance(replies[2 * i + 1], rexc.ResponseError)
                else:
                    assert replies[2 * i + 1] == f"e{i}".encode()
            assert conn.read_responses(0) == []
            conn.send_command("LLEN", key)
            assert conn.read_response() == 1000
        finally:
            pool.release(conn)
    pool.close()


def test_a_pool_dropped_unclosed_in_a_cycle_closes_its_sockets_quietly(
        session_valkey: EmbeddedValkey) -> None:
    """An application the caller never closed is collected with its pool in a
    reference cycle: its sockets are closed without an unclosed-socket
    ResourceWarning (the collector may finalize a socket before its connection)."""
    before = open_sockets()
    pool = _pool(session_valkey.url)
    conns = [pool.get_connection() for _ in range(3)]
    for conn in conns:
        conn.send_command("PING")
        assert conn.read_response() == b"PONG"
        pool.release(conn)
    cycle: list[Any] = [pool]
    cycle.append(cycle)
    del pool, conns, conn, cycle
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []
    assert open_sockets() == before
