"""The rebuild's typed reading of message bodies (``_message_body.parse``) gives what the
orjson path gives (``parse_slow``, the live fold's reading) for every body the log can
hold: any JSON data (falsy metadata, nested, unicode, floats), bodies with a blob,
``d`` that is not an object, role or content that are not strings."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatlog.eventstore.codec import frame_body
from chatlog.projections._message_body import parse, parse_slow

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8)

_FALSY = [None, {}, [], "", 0, False, 0.0, -0.0]


def _body(data: Any, blob: bytes | None = None) -> bytes:
    doc = orjson.dumps({"n": "Blog", "d": data, "s": 1})  # as codec.encode_body writes it
    return doc if blob is None else frame_body(doc, blob)


@settings(max_examples=150, deadline=None)
@given(role=_json | st.text(), content=_json | st.text(), metadata=_json,
       created=st.none() | st.text(), extra=st.dictionaries(st.text(), _json, max_size=2))
def test_typed_parse_equals_orjson_path(role: Any, content: Any, metadata: Any,
                                        created: Any, extra: dict[str, Any]) -> None:
    data = {**extra, "role": role, "content": content, "metadata": metadata,
            "created_at": created}
    body = _body(data)
    assert parse(body) == parse_slow(body)


@pytest.mark.parametrize("metadata", [*_FALSY, {"a": [1, 2.5, "é\n\u2028"]}, [0], "x", 1.5e300])
def test_metadata_text_as_the_live_path_writes_it(metadata: Any) -> None:
    body = _body({"role": "user", "content": "c", "metadata": metadata})
    got = parse(body)
    assert got is not None
    assert got[2] == (orjson.dumps(metadata).decode() if metadata else "{}")
    assert parse(_body({"role": "user", "content": "c"})) == ("user", "c", "{}", None, "Blog")


@pytest.mark.parametrize("data", [[1], "text", None, {"role": 1, "content": "c"},
                                  {"role": "user"}, {"role": "user", "content": ["c"]}])
def test_invalid_messages(data: Any) -> None:
    assert parse(_body(data)) is None


def test_a_body_with_a_blob() -> None:
    body = _body({"role": "user", "content": "c", "metadata": {"k": 1}}, blob=b"\x00\xff{")
    assert parse(body) == ("user", "c", '{"k":1}', None, "Blog")


def test_a_body_that_is_not_json_raises_as_before() -> None:
    with pytest.raises(orjson.JSONDecodeError):
        parse(b"not json")
