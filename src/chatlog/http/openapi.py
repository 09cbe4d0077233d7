"""``GET /openapi.json``: generated from the endpoint declarations and their models."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

import orjson
from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from chatlog.http._routing import JSON, Endpoint
from chatlog.http.models import Problem

PROBLEM = "application/problem+json"
_PATH_PARAM = re.compile(r"\{([a-z_]+)\}")
_PARAM_DOCS = {
    "project": "A project name (case-insensitive) or UUID; `system-master` is the system scope",
    "thread_id": "A thread id as the append answered it",
    "workflow_id": "A workflow id",
    "job_id": "A job id as the enqueue answered it",
}
_ERROR_TEXT = {
    400: "Invalid input (malformed JSON, wrong types, unknown or missing fields)",
    401: "No bearer token, or an unknown one",
    403: "The token may not do this",
    404: "Unknown thread, workflow or path",
    408: "A long-poll ended before the awaited state",
    409: "Conflict (version, idempotency or workflow state)",
    410: "The position was trimmed from the log",
    413: "The request body is too large",
    414: "The URL is too long",
    503: "Redis or a needed part unavailable; retry after Retry-After seconds",
}


def _drop_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent rather than null: keep the non-null branch."""
    branches = schema.get("anyOf")
    if branches:
        rest = [b for b in branches if b.get("type") != "null"]
        if len(rest) == 1:
            merged = {k: v for k, v in schema.items() if k != "anyOf"}
            merged.update(rest[0])
            if merged.get("default", 0) is None:
                merged.pop("default")
            return merged
    return schema


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema()
    params = []
    for name, prop in schema.get("properties", {}).items():
        prop = _drop_null(dict(prop))
        description = prop.pop("description", None)
        prop.pop("title", None)
        param: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in schema.get("required", []),
            "schema": prop,
        }
        if description:
            param["description"] = description
        params.append(param)
    return params


def build(endpoints: Sequence[Endpoint], *, title: str, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``endpoints``."""
    used: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
        (Problem, "serialization")
    ]
    for ep in endpoints:
        if ep.body is not None:
            used.append((ep.body, "validation"))
        for model, _ in ep.responses.values():
            if model is not None:
                used.append((model, "serialization"))
    refs, defs = models_json_schema(
        list(dict.fromkeys(used)), ref_template="#/components/schemas/{model}"
    )
    problem_ref = refs[(Problem, "serialization")]

    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        params: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True,
             "schema": {"type": "string", "minLength": 1, "maxLength": 200},
             "description": _PARAM_DOCS.get(name, name)}
            for name in _PATH_PARAM.findall(ep.path)
        ]
        if ep.query is not None:
            params += _query_parameters(ep.query)
        responses: dict[str, Any] = {}
        for status, (model, text) in sorted(ep.responses.items()):
            media = JSON if model is not None else ep.media_type
            content = (
                {media: {"schema": refs[(model, "serialization")]}}
                if model is not None else {media: {"schema": {"type": "string"}}}
            )
            responses[str(status)] = {"description": text, "content": content}
        errors = {400, 414, 503, *ep.errors}
        if ep.auth:
            errors |= {401, 403}
        if ep.body is not None:
            errors.add(413)
        if _PATH_PARAM.search(ep.path):
            errors.add(404)
        for status in sorted(errors):
            if str(status) not in responses:
                responses[str(status)] = {
                    "description": _ERROR_TEXT.get(status, "Error"),
                    "content": {PROBLEM: {"schema": problem_ref}},
                }
        op: dict[str, Any] = {
            "operationId": ep.operation_id,
            "summary": ep.summary,
            "tags": [ep.tag],
            "parameters": params,
            "responses": responses,
        }
        if ep.description:
            op["description"] = ep.description
        if ep.auth:
            op["security"] = [{"bearer": []}, {}]
        else:
            op["security"] = [{}]
        if ep.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {JSON: {"schema": refs[(ep.body, "validation")]}},
            }
        paths.setdefault(ep.path, {})[ep.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": (
                "chatlog: an event log for AI-agent platforms. Errors are "
                "application/problem+json. Bearer tokens come from CHATLOG_TOKENS_FILE; "
                "without one, loopback clients have full access."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


class OpenApiDocument(BaseModel):
    """An OpenAPI 3.1 document."""

    model_config = {"extra": "allow"}

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]


def with_document(endpoints: Sequence[Endpoint], *, title: str, version: str) -> list[Endpoint]:
    """``endpoints`` plus ``GET /openapi.json``, which serves their document (and its own)."""
    holder: dict[str, bytes] = {}

    async def openapi(request: web.Request) -> web.Response:
        """The OpenAPI document of this API."""
        return web.Response(body=holder["body"], content_type=JSON)

    everything = [
        *endpoints,
        Endpoint("GET", "/openapi.json", openapi, "This OpenAPI document", "operations",
                 auth=False, responses={200: (OpenApiDocument, "The OpenAPI 3.1 document")}),
    ]
    holder["body"] = orjson.dumps(build(everything, title=title, version=version))
    return everything
