"""Errors as ``application/problem+json`` (RFC 9457), mapped in one place.

Every answer that is not a success goes through :func:`problem`: chatlog's
error families carry their own status; aiohttp's HTTP errors, bodies that are
not JSON, pydantic validation errors and oversized bodies are translated by
:func:`problem_middleware`. Anything else is logged and answered with a 500
that shows no traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from pydantic import ValidationError

from chatlog.errors import ChatlogError

log = logging.getLogger(__name__)

PROBLEM_TYPE = "application/problem+json"
#: URLs longer than this are answered 414 as problem+json. The server's own
#: line limit (``SERVER_LINE_LIMIT``) is higher, so such a request reaches
#: this middleware instead of getting aiohttp's plain-text 400.
MAX_URL_BYTES = 8_192
SERVER_LINE_LIMIT = 65_536

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Called with each answered status (the metrics count them).
StatusHook = Callable[[int], None]

_TITLES = {
    400: "Invalid input",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    408: "Request timeout",
    409: "Conflict",
    410: "Gone",
    413: "Request body too large",
    414: "URL too long",
    415: "Unsupported media type",
    500: "Internal error",
    503: "Service unavailable",
    504: "Outcome unknown",
}


def problem(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    """A problem+json response."""
    doc: dict[str, Any] = {
        "type": "about:blank",
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    doc.update(extra)
    hdrs = dict(headers or {})
    if status == 401:
        hdrs.setdefault("WWW-Authenticate", 'Bearer realm="chatlog"')
    return web.Response(
        status=status,
        body=orjson.dumps(doc, default=str),
        content_type=PROBLEM_TYPE,
        headers=hdrs,
    )


def from_error(exc: ChatlogError) -> web.Response:
    """The problem document of one of chatlog's errors: status and fields from its class."""
    headers: dict[str, str] = {}
    retry_after = getattr(exc, "retry_after", None)
    if exc.status in (503, 504):
        headers["Retry-After"] = str(retry_after or 1)
    return problem(exc.status, str(exc), title=exc.title, headers=headers, **exc.extra())


def from_validation(exc: ValidationError, where: str = "body") -> web.Response:
    """400 naming every field that is wrong and why."""
    errors = []
    for err in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = ".".join(str(p) for p in err["loc"]) or where
        errors.append({"field": loc, "message": err["msg"], "type": err["type"]})
    if any(e["type"] == "json_invalid" for e in errors):
        first = next(e for e in errors if e["type"] == "json_invalid")
        return problem(400, f"the request {where} is not valid JSON: {first['message']}",
                       errors=errors)
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
    return problem(400, f"invalid {where}: {summary}", errors=errors)


def from_http_error(exc: web.HTTPException) -> web.Response:
    status = exc.status
    if status == 413:
        detail = f"the request body is larger than this server accepts ({exc.text or ''})".strip()
        return problem(413, detail.replace(" ()", ""))
    if status == 404:
        return problem(404, "no such endpoint; see /openapi.json for the API")
    if status == 405:
        allowed = exc.headers.get("Allow", "")
        return problem(405, f"method not allowed here; allowed: {allowed or 'none'}",
                       headers={"Allow": allowed})
    detail = exc.text or exc.reason
    # The exception's own Content-Type (text/plain when it has a text) gives way
    # to problem+json.
    headers = {k: v for k, v in exc.headers.items() if k.lower() != "content-type"}
    return problem(status, detail, title=exc.reason, headers=headers)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", "") or exc or exc.__class__.__name__).strip()
    line = text.splitlines()[0] if text else exc.__class__.__name__
    line = "".join(c if c.isprintable() else "?" for c in line)
    return line[:200]


def make_problem_middleware(on_status: StatusHook | None = None) -> Any:
    """The middleware that answers every failure as problem+json."""

    @web.middleware
    async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await answer_problems(request, handler)
        if on_status is not None:
            on_status(response.status)
        return response

    return problem_middleware


async def answer_problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``handler(request)``, or the problem+json answer for what it raised (the work of
    the problem middleware; the app's one middleware does the same inline)."""
    try:
        check_url(request)
        return await handler(request)
    except Exception as exc:
        return problem_for(request, exc)


def check_url(request: web.Request) -> None:
    """414 for a URL over :data:`MAX_URL_BYTES`."""
    if len(request.raw_path) > MAX_URL_BYTES:
        raise web.HTTPRequestURITooLong(
            text=f"the URL is {len(request.raw_path)} bytes long; at most "
            f"{MAX_URL_BYTES} are accepted"
        )


def problem_for(request: web.Request, exc: Exception) -> web.Response:
    """The problem+json answer for ``exc``, raised by ``request``'s handler; raises
    again what is not a failure to answer (a redirect, a client gone away)."""
    if isinstance(exc, ChatlogError):
        return from_error(exc)
    if isinstance(exc, ValidationError):
        return from_validation(exc)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        return from_http_error(exc)
    if isinstance(exc, orjson.JSONDecodeError):
        return problem(400, f"the request body is not valid JSON: {exc}")
    if isinstance(exc, HttpProcessingError | RequestPayloadError):
        # The body could not be read as sent: a malformed chunk, a
        # Content-Encoding that does not match the bytes...
        code = getattr(exc, "code", 400)
        status = code if isinstance(code, int) and 400 <= code < 500 else 400
        return problem(status, f"the request body is malformed: {_first_line(exc)}")
    if isinstance(exc, ConnectionError):
        raise exc  # the client went away; the server logs one rate-limited line
    log.error("unexpected error answering %s %s", request.method, request.path, exc_info=exc)
    return problem(500, "unexpected server error; it has been logged")
