"""The web console: ``GET /`` and ``/static/...`` from ``chatlog/http/static/``.

The directory may be missing (a checkout without the console): ``/`` then
answers a plain page that points at the API, never an error.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from chatlog.errors import NotFound

STATIC_DIR = Path(__file__).resolve().parent / "static"

_FALLBACK = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>chatlog</title></head>
<body><h1>chatlog</h1>
<p>The web console is not installed here. The API is described at
<a href="/openapi.json">/openapi.json</a>; health at <a href="/healthz">/healthz</a>.</p>
</body></html>
"""


def static_routes(directory: Path = STATIC_DIR) -> list[web.RouteDef]:
    root = directory.resolve()

    async def index(request: web.Request) -> web.StreamResponse:
        page = root / "index.html"
        if page.is_file():
            return web.FileResponse(page, headers={"Cache-Control": "no-cache"})
        return web.Response(body=_FALLBACK, content_type="text/html")

    async def static(request: web.Request) -> web.StreamResponse:
        rel = request.match_info["path"]
        target = (root / rel).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            raise NotFound(f"no static file {rel!r}")
        return web.FileResponse(target, headers={"Cache-Control": "no-cache"})

    async def favicon(request: web.Request) -> web.StreamResponse:
        icon = root / "favicon.svg"
        if not icon.is_file():
            raise NotFound("no favicon")
        return web.FileResponse(icon, headers={
            "Cache-Control": "max-age=86400", "Content-Type": "image/svg+xml"})

    return [web.get("/", index), web.get("/favicon.ico", favicon),
            web.get("/static/{path:.+}", static)]
