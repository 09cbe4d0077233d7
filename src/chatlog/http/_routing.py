"""Endpoint declarations and the small helpers every handler uses.

An :class:`Endpoint` names its handler, query and body models and responses;
the app registers its route from it and ``/openapi.json`` is generated from
the same declaration, so the document cannot drift from the code.
"""

from __future__ import annotations

import asyncio
import functools
import re
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from chatlog.errors import ChatlogError, InvalidInput
from chatlog.http.models import PARSED_BY_ORJSON
from chatlog.identity import ProjectKey, normalize_project_id

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)

JSON = "application/json"


@dataclass(frozen=True)
class Endpoint:
    """One operation of the API."""

    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    #: status -> (response model or None, description)
    responses: dict[int, tuple[type[BaseModel] | None, str]] = field(default_factory=dict)
    #: Error statuses beyond the ones every operation may answer.
    errors: tuple[int, ...] = ()
    auth: bool = True
    #: Media type of the success answer (``text/event-stream``, ``text/plain``...).
    media_type: str = JSON
    description: str = ""
    #: Request headers it reads: name -> description (documented as header parameters).
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def operation_id(self) -> str:
        return self.handler.__name__


class RequestInvalid(InvalidInput):
    """A body or query that failed validation; names every wrong field."""

    def __init__(self, where: str, exc: ValidationError | list[dict[str, Any]]) -> None:
        self.where = where
        found = exc if isinstance(exc, list) else plain_errors(exc)
        self.errors = [
            {"field": ".".join(str(p) for p in e["loc"]) or where, "message": e["msg"],
             "type": e["type"]}
            for e in found
        ]
        invalid_json = next((e for e in self.errors if e["type"] == "json_invalid"), None)
        if invalid_json is not None:
            detail = f"the request {where} is not valid JSON: {invalid_json['message']}"
        else:
            detail = f"invalid {where}: " + "; ".join(
                e["message"] if e["field"] == where else f"{e['field']}: {e['message']}"
                for e in self.errors[:5]
            )
        super().__init__(detail)

    def extra(self) -> dict[str, Any]:
        return {"errors": self.errors}


def plain_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """A validation error's errors as plain data (they can cross to another process)."""
    return [dict(e) for e in exc.errors(include_url=False, include_context=False,
                                        include_input=False)]


class RequestTimeout(ChatlogError):
    """The request's body did not arrive in time."""

    status = 408
    title = "Request timeout"


#: Seconds a request has to deliver its whole body (the app sets it from its settings).
BODY_TIMEOUT: web.AppKey[float] = web.AppKey("chatlog.body_timeout", float)
#: Bodies from this size on are parsed in a thread, off the event loop.
BIG_BODY = 65_536
_LONG_DIGITS = re.compile(rb"\d{19}")
#: One thread parses big bodies, one at a time: a C parser holds the GIL while it
#: runs, so two at once would keep the event loop from it twice as long.
_BIG_BODY_PARSER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chatlog-body")


async def read_body(request: web.Request, model: type[M]) -> M:
    """The JSON body validated by ``model`` (strict types, unknown fields refused).

    An empty body counts as ``{}``; a body over the size limit is a 413; a
    body that does not arrive within the body timeout is a 408. A big body is
    parsed and validated in a thread, so that even a legal body of half a
    million tiny JSON values leaves the event loop free.
    """
    raw = await read_raw_body(request)
    try:
        if len(raw) >= BIG_BODY:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(_BIG_BODY_PARSER, validate_big, model, raw)
    except ValidationError as exc:
        raise RequestInvalid("body", exc) from None
    return validate_body(raw, model)


def validate_body(raw: bytes, model: type[M]) -> M:
    """A (small) body's bytes validated by ``model``; 400 naming the wrong fields."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestInvalid("body", exc) from None


async def read_raw_body(request: web.Request) -> bytes:
    """The body's bytes (``{}`` when empty); 408 when it does not arrive within the
    body timeout."""
    if request.content.is_eof():  # all of it came with the head: no timer to arm
        raw = await request.read()
    else:
        # (config_dict builds a mapping view per call: looked up only when needed.)
        timeout = request.config_dict.get(BODY_TIMEOUT)
        try:
            async with asyncio.timeout(timeout):
                raw = await request.read()
        except TimeoutError:
            raise RequestTimeout(
                f"the request body did not arrive within {timeout:g} s"
            ) from None
    return raw if raw.strip() else b"{}"


def validate_big(model: type[M], raw: bytes) -> M:
    """``model.model_validate_json(raw)`` for a big body, holding the GIL less.

    pydantic's JSON parser holds the GIL while it builds every value (measured:
    over 100 ms for a 1 MB body of tiny values), and JsonObject's check then
    walks every value in Python. orjson builds them several times faster and
    refuses non-finite numbers itself; the top-level scalars are validated from
    JSON (strict JSON rules, the same errors), the nested objects and arrays from
    Python without the walk. orjson reads integers beyond 64 bits as floats, so
    a body with a run of 19 digits anywhere takes pydantic's own path.
    """
    if _LONG_DIGITS.search(raw) is not None:
        return model.model_validate_json(raw)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        # An empty value of the same type: the model's error says "an object".
        return model.model_validate_json(orjson.dumps(type(data)()))
    containers = {k: v for k, v in data.items() if isinstance(v, dict | list)}
    head = model.model_validate_json(
        orjson.dumps({k: (type(v)() if k in containers else v) for k, v in data.items()})
    )
    if not containers:
        return head
    return model.model_validate({**dict(head), **containers},
                                context={PARSED_BY_ORJSON: True})


def read_query(request: web.Request, model: type[M]) -> M:
    """The query parameters validated by ``model`` (first value of a repeated one)."""
    values = {k: request.query.getone(k) for k in request.query}
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise RequestInvalid("query", exc) from None


#: Normalising is pure; the same few project names come in on every request.
_normalize = functools.lru_cache(maxsize=4096)(normalize_project_id)


def project_of(request: web.Request, namespace: uuid.UUID) -> ProjectKey:
    """The ``{project}`` of the path, normalised with the identity rules."""
    return _normalize(request.match_info["project"], namespace)


def json_response(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=model.model_dump_json().encode(), content_type=JSON
    )
