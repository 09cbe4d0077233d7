"""A big body, parsed and validated in the worker process (:mod:`chatlog.offload`).

The event loop's process receives the small fields and, for each of ``big`` (the
fields that may hold half a million tiny values), its JSON bytes, which it
embeds as ``orjson.Fragment`` and never parses (issue 15 #9). The JSON of a big
field has its keys sorted: the bytes :func:`~chatlog.eventstore.content_digest`
hashes for the same value as a dict, so a retry's digest is the same.
"""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from chatlog import offload
from chatlog.errors import InvalidInput
from chatlog.http._routing import RequestInvalid, plain_errors, validate_big

M = TypeVar("M", bound=BaseModel)


def prepare(model: type[M], raw: bytes, big: tuple[str, ...]) -> tuple[Any, ...]:
    """In the worker: ("ok", small fields, {big field: JSON}), ("invalid", errors)
    or ("error", message)."""
    try:
        body = validate_big(model, raw)
    except ValidationError as exc:
        return ("invalid", plain_errors(exc))
    except InvalidInput as exc:
        return ("error", str(exc))
    fields = body.model_dump(exclude=set(big))
    try:
        blobs = {name: orjson.dumps(getattr(body, name), option=orjson.OPT_SORT_KEYS)
                 for name in big}
    except orjson.JSONEncodeError as exc:  # nested deeper than JSON is stored (254 levels)
        return ("error", f"the request body cannot be stored: {exc}")
    return ("ok", fields, blobs)


async def read_big(model: type[M], raw: bytes, big: tuple[str, ...]) -> tuple[M, dict[str, bytes]]:
    """``raw`` as ``model`` whose ``big`` fields are ``orjson.Fragment``, and their JSON;
    a 400 naming the wrong fields as :func:`~chatlog.http._routing.read_body` answers."""
    reply = await offload.run(prepare, model, raw, big)
    if reply[0] == "invalid":
        raise RequestInvalid("body", reply[1])
    if reply[0] == "error":
        raise InvalidInput(reply[1])
    _, fields, blobs = reply
    fragments: dict[str, Any] = {name: orjson.Fragment(blob) for name, blob in blobs.items()}
    return model.model_construct(**fields, **fragments), blobs


def same_json(a: bytes, b: bytes) -> bool:
    """In the worker: whether two JSON documents hold the same value."""
    return bool(orjson.loads(a) == orjson.loads(b))


async def same_value(stored: bytes, given: Any, given_json: bytes | None) -> bool:
    """Whether ``stored`` (JSON) holds ``given`` (a value, or a Fragment of
    ``given_json``); parsed in the worker when either side is big."""
    if given_json is None and len(stored) < offload.BIG:
        return bool(orjson.loads(stored) == given)
    return await offload.run(same_json, stored, given_json or orjson.dumps(given))


def dump_json(model: BaseModel) -> bytes:
    """``model.model_dump_json()``, each ``orjson.Fragment`` in it (a big JSON value
    never parsed here) written as its bytes."""
    fragments: list[bytes] = []
    mark = f"chatlog-fragment-{uuid.uuid4()}-"

    def fallback(value: Any) -> str:
        if not isinstance(value, orjson.Fragment):
            raise TypeError(f"{type(value).__name__} is not JSON serializable")
        fragments.append(orjson.dumps(value))  # a Fragment's bytes, copied as they are
        return f"{mark}{len(fragments) - 1}"

    doc = model.model_dump_json(fallback=fallback, warnings=False).encode()
    if not fragments:
        return doc
    # One pass: each piece after the first starts with a fragment's index and its '"'.
    first, *rest = doc.split(f'"{mark}'.encode())
    out = [first]
    for piece in rest:
        index, tail = piece.split(b'"', 1)
        out += (fragments[int(index)], tail)
    return b"".join(out)


def json_answer(model: BaseModel, status: int = 200) -> web.Response:
    """The model as a JSON response, its Fragments (big values) written as they are."""
    return web.Response(status=status, body=dump_json(model), content_type="application/json")
