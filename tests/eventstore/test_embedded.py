"""The embedded Valkey: durable settings, leftovers of a crashed run, clear errors."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from chatlog.errors import EmbeddedServerError
from chatlog.eventstore import EmbeddedValkey
from chatlog.eventstore.embedded import free_port


def test_embedded_default_is_durable(valkey_factory: Callable[..., EmbeddedValkey]) -> None:
    server = valkey_factory()
    client = redis.Redis.from_url(server.url)
    try:
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        assert Path(client.config_get("dir")["dir"]) == server.dir
    finally:
        client.close()
    assert server.socket is not None and server.url.startswith("unix://")


def test_stale_pid_file_and_socket_are_cleaned_up(
    valkey_factory: Callable[..., EmbeddedValkey], short_tmp: Path
) -> None:
    d = short_tmp / "stale"
    first = valkey_factory(d)
    first.kill()  # a crash leaves the pid file and the socket behind
    assert first.pidfile.exists() and (d / "valkey.sock").exists()
    second = valkey_factory(d)
    assert second.pid is not None
    client = redis.Redis.from_url(second.url)
    try:
        assert client.ping()
    finally:
        client.close()


def test_a_running_server_on_the_same_data_dir_is_a_clear_error(
    valkey_factory: Callable[..., EmbeddedValkey], short_tmp: Path
) -> None:
    d = short_tmp / "busy"
    running = valkey_factory(d)
    with pytest.raises(EmbeddedServerError, match=f"already running on {d}") as err:
        EmbeddedValkey(d).start()
    assert str(running.pid) in str(err.value)


def test_a_socket_in_use_is_a_clear_error(short_tmp: Path) -> None:
    d = short_tmp / "sock"
    d.mkdir()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(d / "valkey.sock"))
    listener.listen()
    try:
        with pytest.raises(EmbeddedServerError, match="is in use by another server"):
            EmbeddedValkey(d).start()
    finally:
        listener.close()


def test_a_port_in_use_is_a_clear_error(short_tmp: Path) -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        with pytest.raises(EmbeddedServerError, match=f"port 127.0.0.1:{port} is in use"):
            EmbeddedValkey(short_tmp / "port", port=port).start()


def test_loopback_port_mode(valkey_factory: Callable[..., EmbeddedValkey]) -> None:
    server = valkey_factory(port=0)
    assert server.url.startswith("redis://127.0.0.1:")
    client = redis.Redis.from_url(server.url)
    try:
        assert client.ping()
    finally:
        client.close()


def test_stop_is_clean_and_keeps_data(valkey_factory: Callable[..., EmbeddedValkey]) -> None:
    server = valkey_factory()
    client = redis.Redis.from_url(server.url)
    client.set("k", "v")
    client.close()
    pid = server.pid
    server.stop()
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not server.pidfile.exists()
    server.start()
    client = redis.Redis.from_url(server.url)
    try:
        assert client.get("k") == b"v"
    finally:
        client.close()


def test_a_bad_binary_is_a_clear_error(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATLOG_VALKEY_BINARY", "/bin/false")
    with pytest.raises(EmbeddedServerError, match="exited with code 1"):
        EmbeddedValkey(short_tmp / "bad").start()
