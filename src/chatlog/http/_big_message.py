"""A big message body, parsed, validated and hashed in the worker process
(:mod:`chatlog.offload`): the event loop's process receives the scalar fields, the
metadata as JSON bytes (an ``orjson.Fragment`` it embeds as is) and the digest, and
never builds or serializes the half-million values a legal 1 MB body may hold."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from chatlog import offload
from chatlog.errors import InvalidInput
from chatlog.http._routing import RequestInvalid, plain_errors, validate_big
from chatlog.http.models import PostMessage
from chatlog.identity import normalize_thread_id

#: What the worker sends back: ("ok", scalar fields, metadata JSON, digest),
#: ("invalid", validation errors) or ("error", message).
Prepared = tuple[Any, ...]


def prepare(raw: bytes) -> Prepared:
    """In the worker process: validate ``raw`` as a :class:`PostMessage` (the same
    rules and errors as in the server's process) and compute its digest."""
    from chatlog.http.messages import message_digest

    try:
        body = validate_big(PostMessage, raw)
        thread_id, new_thread = normalize_thread_id(body.thread_id)
    except ValidationError as exc:
        return ("invalid", plain_errors(exc))
    except InvalidInput as exc:
        return ("error", str(exc))
    digest = message_digest(body, None if new_thread else thread_id)
    fields = body.model_dump(exclude={"metadata"})
    return ("ok", fields, orjson.dumps(body.metadata), digest)


async def read_big_message(raw: bytes) -> tuple[PostMessage, str]:
    """``raw`` (a big body) as a :class:`PostMessage` whose metadata is an
    ``orjson.Fragment``, and its content digest; 400 as :func:`read_body` answers."""
    reply = await offload.run(prepare, raw)
    if reply[0] == "invalid":
        raise RequestInvalid("body", reply[1])
    if reply[0] == "error":
        raise InvalidInput(reply[1])
    _, fields, metadata, digest = reply
    # Not a dict but its JSON, valid by construction: the event's body embeds it as is.
    fragment: Any = orjson.Fragment(metadata)
    return PostMessage.model_construct(**fields, metadata=fragment), digest
