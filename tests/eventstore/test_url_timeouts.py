"""The Redis URL's ``?socket_timeout=`` (and ``?socket_connect_timeout=``): a value
that is not a positive, finite number of seconds is a clear startup error (redis-py
and the lean connections read 0, negatives and nan each their own way), on every kind
of URL; and blocking reads never get the reply timeout, on a cluster either."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatlog.errors import ConfigError
from chatlog.eventstore import EmbeddedValkey, EventStore

BAD = ["0", "-1", "nan", "inf", "-inf", "soon", "1e12"]


@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize("option", ["socket_timeout", "socket_connect_timeout"])
async def test_a_bad_timeout_is_a_config_error_on_every_kind_of_url(
    session_valkey: EmbeddedValkey, key_prefix: str, value: str, option: str
) -> None:
    for url in (session_valkey.url, "redis://:secret@127.0.0.1:1/0",
                "redis+cluster://:secret@127.0.0.1:1"):
        with pytest.raises(ConfigError) as err:
            store = await asyncio.wait_for(
                EventStore.open(f"{url}?{option}={value}", prefix=key_prefix), 10)
            await store.close()  # (not reached when the URL is refused)
        message = str(err.value)
        assert message.startswith("invalid Redis URL: ") and option in message
        assert "secret" not in message and "\n" not in message


async def test_good_timeouts_still_open(session_valkey: EmbeddedValkey, key_prefix: str) -> None:
    store = await EventStore.open(
        session_valkey.url + "?socket_connect_timeout=1e3&socket_timeout=0.25", prefix=key_prefix)
    try:
        assert store._topology.lean is not None and store._topology.lean.timeout == 0.25
    finally:
        await store.close()


async def test_a_cluster_tail_gets_no_reply_timeout_from_the_url(
    cluster_url: str, key_prefix: str
) -> None:
    """``XREAD BLOCK`` for longer than the URL's socket_timeout returns nothing (it
    timed out with it before: the cluster's blocking client took the URL's option)."""
    store = await EventStore.open(cluster_url + "?socket_timeout=0.2", prefix=key_prefix)
    try:
        tail = store._topology.tail_redis
        got = await tail.xread({f"{{{key_prefix}}}:nothing": "$"}, block=700)
        assert not got
    finally:
        await store.close()


def test_the_cli_says_one_line(tmp_path: Path) -> None:
    url = "redis+cluster://:secret@127.0.0.1:1?socket_timeout=nan"
    env = {**os.environ, "CHATLOG_REDIS_URL": url, "CHATLOG_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.run([sys.executable, "-m", "chatlog", "status"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("Error: invalid Redis URL: socket_timeout"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "secret" not in proc.stderr
