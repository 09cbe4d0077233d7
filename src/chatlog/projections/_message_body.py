"""The fields of a message event's body the rebuild's fold needs, parsed once.

A body is ``orjson.dumps({"n": name, "d": data, "s": version})`` (see
``codec.encode_body``, the only writer of bodies). The fold needs ``n``, and
``role``, ``content``, ``metadata`` and ``created_at`` of ``d``; ``metadata``
goes into its row as JSON text, which the live path makes with
``orjson.dumps(metadata)``. A typed msgspec decoder reads only those fields
and keeps ``metadata`` as the raw JSON it is in the body: no dict built from
it and dumped again (this halved the body's cost, which was half the fold's).
The raw JSON is what ``orjson.dumps`` of its parse gives back because the body
is orjson's own output (compact, keys in their order, the shortest floats).

Anything else (a body with a binary blob, ``d`` not an object, a short
``metadata`` that may be falsy, no ``n``) takes :func:`parse_slow`, the
orjson path the live projection's fold follows, with its outcomes.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from chatlog.eventstore.codec import BLOB_MARK, split_body

#: What a message row's fields come from: ``(role, content, metadata JSON text,
#: created_at, project name)``; None for a message the fold counts as invalid.
Parsed = tuple[Any, Any, str, Any, Any] | None


class _Data(msgspec.Struct):
    role: Any = None
    content: Any = None
    metadata: msgspec.Raw = msgspec.Raw()
    created_at: Any = None


class _Body(msgspec.Struct):
    n: Any
    d: _Data


_decode = msgspec.json.Decoder(_Body).decode
#: Raw metadata this short may be falsy (``null``, ``{}``, ``[]``, ``""``, ``0``,
#: ``false``, ``0.0``): the live path writes ``{}`` for those, so they are parsed.
_SHORT = 5


def parse(body: bytes) -> Parsed:
    """``(role, content, metadata text, created_at, name)`` of a message body, or None
    when its ``d`` holds no string role and content (an invalid message)."""
    try:
        doc = _decode(body)
    except msgspec.DecodeError:
        return parse_slow(body)
    data = doc.d
    role, content, metadata = data.role, data.content, data.metadata
    if type(role) is not str or type(content) is not str:
        return None
    if len(metadata) <= _SHORT:
        if not len(metadata):
            return role, content, "{}", data.created_at, doc.n
        return parse_slow(body)
    return role, content, str(metadata, "utf-8"), data.created_at, doc.n


def parse_slow(body: bytes) -> Parsed:
    """:func:`parse` through ``orjson.loads`` (a body carrying a blob is split first);
    raises as the live path's decoding does for a body that is not a message's."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        if body[:1] != BLOB_MARK:
            raise
        doc = orjson.loads(split_body(body)[0])
    data = doc["d"]
    if type(data) is not dict:  # orjson makes exact dicts and strs
        return None
    role = data.get("role")
    content = data.get("content")
    if type(role) is not str or type(content) is not str:
        return None
    metadata = data.get("metadata")
    return (role, content, orjson.dumps(metadata).decode() if metadata else "{}",
            data.get("created_at"), doc["n"])
