"""The app served by :func:`chatlog.http.running` (the server ``chatlog serve`` uses:
connection bounds, parser errors as problem+json) on a loopback port, in this process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from chatlog.eventstore import EventStore
from chatlog.http import Services, create_app, running
from chatlog.http.app import build_services
from chatlog.settings import Settings

Live = Callable[..., Awaitable[tuple[str, int]]]


@pytest.fixture
async def live(redis_url: str, key_prefix: str, tmp_path: Path) -> AsyncIterator[Live]:
    """``await live(services=False, **settings)``: (host, port) where the app listens."""
    async with AsyncExitStack() as stack:
        async def start(*, services: bool = False, **overrides: Any) -> tuple[str, int]:
            values: dict[str, Any] = {"redis_url": redis_url, "key_prefix": key_prefix,
                                      "data_dir": tmp_path / "live", "port": 0}
            values.update(overrides)
            settings = Settings(**values)
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            store = await EventStore.open(settings.redis_url or redis_url,
                                          prefix=settings.key_prefix,
                                          partitions=settings.partitions)
            stack.push_async_callback(store.close)
            svc = build_services(settings, store) if services else Services()
            app = create_app(settings, store, services=svc)
            runner = await stack.enter_async_context(running(app, "127.0.0.1", 0))
            host, port = runner.addresses[0][:2]
            return str(host), int(port)

        yield start
