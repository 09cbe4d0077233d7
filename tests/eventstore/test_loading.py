"""While Valkey loads its AOF after a restart it answers every command ``-LOADING``:
the store is unavailable then (503 over HTTP), never an unexpected error (a 500).

The store's reads over the lean connection (MULTI + XRANGE) raised the server's
LOADING reply as it came instead of as :class:`StoreUnavailable`: the likely cause of
the one 500 CI saw under ``POST …/messages`` in the test that kills Valkey under
append load (a retried append's original is read back).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis
from redis import exceptions as rexc

from chatlog.errors import StoreUnavailable
from chatlog.eventstore import EventStore
from chatlog.eventstore.embedded import EmbeddedValkey
from tests.helpers import message, wait_until

pytestmark = pytest.mark.slow

#: Keys beside the log, each loaded slowly (``key-load-delay``, µs a key), so the
#: restarted server stays in its LOADING state for a few seconds.
PADDING = 3000
LOAD_DELAY_US = 1000


def _loading(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=5)
    try:
        client.ping()
    except rexc.BusyLoadingError:
        return True
    except rexc.ConnectionError:
        return False  # not listening yet
    finally:
        client.close()
    return False


async def test_reads_while_valkey_loads_its_aof_are_unavailable(short_tmp: Path) -> None:
    data = short_tmp / f"ld{uuid.uuid4().hex[:6]}"
    server = EmbeddedValkey(data).start()
    restarted: EmbeddedValkey | None = None
    store = await EventStore.open(server.url)
    try:
        first = await store.append_one(message(content="kept"))
        with redis.Redis.from_url(server.url) as client:
            pipe = client.pipeline(transaction=False)
            for i in range(PADDING):
                pipe.set(f"padding:{i}", "x")
            pipe.execute()
            # Into the AOF's base file (an RDB), whose keys key-load-delay slows down.
            client.bgrewriteaof()
            wait_until(lambda: client.info("persistence")["aof_rewrite_in_progress"] == 0
                       and client.info("persistence")["aof_rewrite_scheduled"] == 0,
                       timeout=30, what="the AOF rewrite")
        server.stop()
        restarted = EmbeddedValkey(data, extra_args=[
            "--key-load-delay", str(LOAD_DELAY_US),
            "--loading-process-events-interval-bytes", "1024"])
        restarted.spawn()
        wait_until(lambda: _loading(restarted.url), timeout=10, what="the server to be loading")

        with pytest.raises(StoreUnavailable):
            await store.read(first.partition)
        with pytest.raises(StoreUnavailable):
            await store.read_flat(first.partition)
        with pytest.raises(StoreUnavailable):  # refused: nothing written
            await store.append_one(message(content="refused while loading"))
        assert _loading(restarted.url), "the server finished loading during the reads"

        restarted.wait_ready(timeout=60)
        events = await store.read(first.partition)
        assert [e.data["content"] for e in events] == ["kept"]
    finally:
        await store.close()
        if restarted is not None:
            restarted.stop()
        server.stop()
