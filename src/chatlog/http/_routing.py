"""Endpoint declarations and the small helpers every handler uses.

An :class:`Endpoint` names its handler, query and body models and responses;
the app registers its route from it and ``/openapi.json`` is generated from
the same declaration, so the document cannot drift from the code.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from chatlog.errors import InvalidInput
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

    def __init__(self, where: str, exc: ValidationError) -> None:
        self.where = where
        self.errors = [
            {"field": ".".join(str(p) for p in e["loc"]) or where, "message": e["msg"],
             "type": e["type"]}
            for e in exc.errors(include_url=False, include_context=False, include_input=False)
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


async def read_body(request: web.Request, model: type[M]) -> M:
    """The JSON body validated by ``model`` (strict types, unknown fields refused).

    An empty body counts as ``{}``; a body over the size limit is a 413.
    """
    raw = await request.read()
    if not raw.strip():
        raw = b"{}"
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestInvalid("body", exc) from None


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
