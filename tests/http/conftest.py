"""Fixtures: the real app (projector, read model, orchestrator) on a real Valkey.

``api()`` builds an app with the settings given, serves it with aiohttp's
test server on loopback and returns a client; everything is stopped after
the test.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from chatlog import offload
from chatlog.eventstore import EventStore
from chatlog.http import Services, create_app
from chatlog.http.app import build_services
from chatlog.http.models import MessageAccepted
from chatlog.settings import Settings
from tests.http.live import live  # noqa: F401  (a fixture: the app on a real server)

TOKENS = {
    "admin": "admin-token-0001",
    "blog": "blog-token-00001",
    "shop": "shop-token-00001",
    "reader": "reader-token-001",
}


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [
        {"token": TOKENS["admin"], "name": "ops", "admin": True},
        {"token": TOKENS["blog"], "read": ["Blog-Project"], "write": ["blog-project"]},
        {"token": TOKENS["shop"], "read": ["Shop"], "write": ["Shop"]},
        {"token": TOKENS["reader"], "read": ["Blog-Project"]},
    ]}))
    return path


ApiFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
async def api(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> AsyncIterator[ApiFactory]:
    """``await api(**settings)``: a client of a running app; ``store=`` / ``url=`` to choose."""
    opened: list[Any] = []

    async def make(
        *, url: str | None = None, services: bool = True, **overrides: Any
    ) -> TestClient[web.Request, web.Application]:
        values: dict[str, Any] = {
            "redis_url": url or redis_url,
            "data_dir": tmp_path / f"data{len(opened)}",
            "key_prefix": key_prefix,
            "sse_keepalive": 0.5,
        }
        values.update(overrides)
        settings = Settings(**values)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = await EventStore.open(
            values["redis_url"], partitions=settings.partitions, prefix=settings.key_prefix
        )
        opened.append(store)
        svc = build_services(settings, store) if services else Services()
        client = TestClient(TestServer(create_app(settings, store, services=svc)))
        await client.start_server()
        opened.append(client)
        return client

    yield make
    for thing in reversed(opened):
        await thing.close()


@pytest.fixture
async def client(api: ApiFactory) -> TestClient[web.Request, web.Application]:
    """The app in open access (loopback, no tokens)."""
    return await api()


@contextlib.contextmanager
def counting_big_parses() -> Iterator[list[int]]:
    """The sizes of the big documents (>= offload.BIG) orjson parses in this process
    inside the block: the server must hand those to its worker process."""
    real_loads = orjson.loads
    found: list[int] = []

    def counting_loads(data: Any) -> Any:
        if len(data) >= offload.BIG:
            found.append(len(data))
        return real_loads(data)

    orjson.loads = counting_loads
    try:
        yield found
    finally:
        orjson.loads = real_loads


async def post_message(
    client: TestClient[web.Request, web.Application],
    project: str,
    content: str = "hello",
    *,
    thread_id: str | None = None,
    headers: dict[str, str] | None = None,
    **more: Any,
) -> dict[str, Any]:
    body = {"thread_id": thread_id, "role": "user", "content": content, **more}
    resp = await client.post(f"/v1/projects/{project}/messages", json=body, headers=headers)
    assert resp.status == 201, await resp.text()
    doc: dict[str, Any] = await resp.json()
    MessageAccepted.model_validate(doc)  # the documented shape, exactly
    return doc


async def read_sse(resp: Any, count: int, timeout: float = 10.0) -> list[tuple[str, dict[str, Any]]]:
    """Read ``count`` events (id, data) from an SSE answer; comments are skipped."""
    import asyncio

    out: list[tuple[str, dict[str, Any]]] = []
    event_id = ""
    data: list[str] = []
    async with asyncio.timeout(timeout):
        while len(out) < count:
            line = (await resp.content.readline()).decode()
            if not line:
                raise AssertionError(f"stream ended after {len(out)} events")
            line = line.rstrip("\n")
            if line == "":
                if data:
                    out.append((event_id, json.loads("\n".join(data))))
                data = []
            elif line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                data.append(line[6:])
    return out
