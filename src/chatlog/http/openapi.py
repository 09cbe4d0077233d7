"""``GET /openapi.json``: generated from the endpoint declarations and their models."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

import orjson
from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from chatlog.events import data_model, known_types
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
    408: "A long-poll ended before the awaited state, or the body came too slowly",
    409: "Conflict (version, idempotency or workflow state)",
    410: "The cursor lies in history that was deliberately deleted; `oldest_cursor` "
         "names the oldest cursor still available",
    413: "The request body is too large",
    414: "The URL is too long",
    503: "Redis or a needed part unavailable, nothing was written; retry after Retry-After "
         "seconds",
    504: "Outcome unknown: the store did not answer in time; the append may be in the log. "
         "Retry with the `event_id` given (`retry_safe`: it cannot land twice)",
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
    typed = _event_data_models()
    used += [(model, "validation") for model in typed.values()]
    refs, defs = models_json_schema(
        list(dict.fromkeys(used)), ref_template="#/components/schemas/{model}"
    )
    problem_ref = refs[(Problem, "serialization")]
    schemas: dict[str, Any] = defs.get("$defs", {})
    event_ref = _event_schemas(schemas, {t: refs[(m, "validation")] for t, m in typed.items()})

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
        params += [{"name": name, "in": "header", "required": False,
                    "schema": {"type": "string"}, "description": text}
                   for name, text in ep.headers]
        responses: dict[str, Any] = {}
        for status, (model, text) in sorted(ep.responses.items()):
            media = JSON if model is not None else ep.media_type
            plain = event_ref if media == "text/event-stream" else {"type": "string"}
            content = (
                {media: {"schema": refs[(model, "serialization")]}}
                if model is not None else {media: {"schema": plain}}
            )
            responses[str(status)] = {"description": text, "content": content}
        errors = {400, 414, 503, *ep.errors}
        if ep.auth:
            errors |= {401, 403}
        if ep.body is not None:
            errors |= {408, 413}  # 408: the body did not arrive within CHATLOG_BODY_TIMEOUT
        if ep.method == "POST":
            errors.add(504)  # the store did not answer an append: retry with its event_id
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
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _event_data_models() -> dict[str, type[BaseModel]]:
    models = {t: data_model(t) for t in known_types()}
    return {t: m for t, m in models.items() if m is not None}


def _event_schemas(schemas: dict[str, Any], data_refs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``Event``: an event whose ``data`` schema depends on its ``type`` (a discriminated
    union, one ``<Data>Event`` per type); its ``$ref``."""
    mapping: dict[str, str] = {}
    for type_name, ref in data_refs.items():
        name = ref["$ref"].rsplit("/", 1)[1] + "Event"
        schemas[name] = {
            "type": "object",
            "description": f"A `{type_name}` event",
            "required": ["id", "type", "data"],
            "properties": {
                "id": {"type": "string", "format": "uuid"},
                "type": {"const": type_name},
                "data": ref,
            },
        }
        mapping[type_name] = f"#/components/schemas/{name}"
    schemas["Event"] = {
        "description": "An event of the log; the schema of `data` depends on `type`. "
                       "Other fields (project, aggregate, version, position, time, cursor) "
                       "are as in the replay page's events.",
        "oneOf": [{"$ref": ref} for ref in mapping.values()],
        "discriminator": {"propertyName": "type", "mapping": mapping},
    }
    return {"$ref": "#/components/schemas/Event"}


class OpenApiDocument(BaseModel):
    """An OpenAPI 3.1 document."""

    model_config = {"extra": "allow"}

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]


def with_document(endpoints: Sequence[Endpoint], *, title: str, version: str) -> list[Endpoint]:
    """``endpoints`` plus ``GET /openapi.json``, which serves their document (and its own).

    The document is built on its first request, not while ``chatlog serve`` starts
    (its JSON schemas are most of the function calls of making the app)."""
    holder: dict[str, bytes] = {}

    async def openapi(request: web.Request) -> web.Response:
        """The OpenAPI document of this API."""
        body = holder.get("body")
        if body is None:
            body = holder["body"] = orjson.dumps(build(everything, title=title, version=version))
        return web.Response(body=body, content_type=JSON)

    everything = [
        *endpoints,
        Endpoint("GET", "/openapi.json", openapi, "This OpenAPI document", "operations",
                 auth=False, responses={200: (OpenApiDocument, "The OpenAPI 3.1 document")}),
    ]
    return everything
