"""Fixtures: real Valkey servers from the bundled binary, real SQLite files.

Factories own what they start and stop it by its pid at teardown.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from chatlog.eventstore import EmbeddedValkey, EventStore


@pytest.fixture(scope="session")
def short_tmp() -> Iterator[Path]:
    """A short temporary dir, so unix socket paths fit in sockaddr_un."""
    with tempfile.TemporaryDirectory(prefix="cl-") as d:
        yield Path(d)


@pytest.fixture
def valkey_factory(short_tmp: Path) -> Iterator[Callable[..., EmbeddedValkey]]:
    """Start Valkey servers (fsync always, as the embedded default); stop them after the test."""
    started: list[EmbeddedValkey] = []

    def start(data_dir: Path | None = None, **kwargs: object) -> EmbeddedValkey:
        d = data_dir or short_tmp / f"v{uuid.uuid4().hex[:8]}"
        server = EmbeddedValkey(d, **kwargs).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def session_valkey(short_tmp: Path) -> Iterator[EmbeddedValkey]:
    """One Valkey for the session; tests isolate themselves with a key prefix each."""
    server = EmbeddedValkey(short_tmp / "session").start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(session_valkey: EmbeddedValkey) -> str:
    return session_valkey.url


@pytest.fixture
def key_prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def store_factory(
    redis_url: str, key_prefix: str
) -> AsyncIterator[Callable[..., object]]:
    """Open EventStores (default: the session server, this test's prefix); close them after."""
    opened: list[EventStore] = []

    async def open_store(url: str | None = None, **kwargs: object) -> EventStore:
        kwargs.setdefault("prefix", key_prefix)
        s = await EventStore.open(url or redis_url, **kwargs)  # type: ignore[arg-type]
        opened.append(s)
        return s

    yield open_store
    for s in opened:
        await s.close()


@pytest.fixture
async def store(store_factory: Callable[..., object]) -> EventStore:
    return await store_factory()  # type: ignore[no-any-return, misc]
