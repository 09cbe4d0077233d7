"""Opaque page cursors of the list endpoints (threads, workflows, jobs).

A cursor is the sort key of a page's last row, as base64 of a JSON list:
clients pass ``next_cursor`` back unchanged; anything else is a clean 400.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

import orjson

from chatlog.errors import InvalidInput


def encode_cursor(key: Sequence[int | str]) -> str:
    """An opaque page cursor for a page key (the sort key of a page's last row)."""
    return base64.urlsafe_b64encode(orjson.dumps(list(key))).decode().rstrip("=")


def decode_cursor(cursor: str, shape: tuple[type, ...]) -> tuple[Any, ...]:
    """The page key of a cursor :func:`encode_cursor` made, its parts of types ``shape``.

    Anything else is :class:`InvalidInput` (400), never a crash.
    """
    try:
        key = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not (isinstance(key, list) and len(key) == len(shape)
                and all(type(v) is t for v, t in zip(key, shape, strict=True))):
            raise ValueError(cursor)
        return tuple(key)
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise InvalidInput(
            f"cursor {cursor!r} is not one this API gave out; pass next_cursor unchanged"
        ) from None
