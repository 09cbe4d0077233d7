"""The web console's files: served when present, a plain page when missing."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from chatlog.http.problems import make_problem_middleware
from chatlog.http.static_files import static_routes


async def _client(directory: Path) -> TestClient[web.Request, web.Application]:
    app = web.Application(middlewares=[make_problem_middleware()])
    app.router.add_routes(static_routes(directory))
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_console_files_are_served(tmp_path: Path) -> None:
    (tmp_path / "js").mkdir()
    (tmp_path / "index.html").write_text("<h1>console</h1>")
    (tmp_path / "js" / "app.js").write_text("export {};")
    (tmp_path.parent / "secret.txt").write_text("no")
    client = await _client(tmp_path)
    try:
        resp = await client.get("/")
        assert resp.status == 200 and "console" in await resp.text()
        resp = await client.get("/static/js/app.js")
        assert resp.status == 200 and await resp.text() == "export {};"
        for path in ("/static/../secret.txt", "/static/%2e%2e/secret.txt", "/static/nope.js"):
            resp = await client.get(path)
            assert resp.status == 404, path
            assert resp.content_type == "application/problem+json"
    finally:
        await client.close()


async def test_a_missing_console_is_a_plain_page_not_an_error(tmp_path: Path) -> None:
    client = await _client(tmp_path / "not-there")
    try:
        resp = await client.get("/")
        assert resp.status == 200
        assert "/openapi.json" in await resp.text()
        assert (await client.get("/static/app.js")).status == 404
    finally:
        await client.close()


async def test_favicon_is_served_not_404() -> None:
    from chatlog.http.static_files import STATIC_DIR

    client = await _client(STATIC_DIR)
    try:
        resp = await client.get("/favicon.ico")
        assert resp.status == 200
        assert resp.content_type == "image/svg+xml"
        assert (await client.get("/static/favicon.svg")).status == 200
    finally:
        await client.close()
