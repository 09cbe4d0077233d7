"""What a stored JSON object may hold (message metadata, job payloads, workflow inputs
and results), the same from HTTP, the CLI and anywhere else values come in.

Numbers fit 64 bits and are finite (JSON has no NaN, and a reader in another language
must read them back as they were written); objects and arrays nest at most
``MAX_JSON_DEPTH`` levels, the value itself being one: readers write stored values
back inside envelopes (an event, a page of events), which orjson writes up to 254
levels deep.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from chatlog.errors import InvalidInput

#: How deep a stored JSON object may nest (the object itself is one level).
MAX_JSON_DEPTH = 128
TOO_DEEP = f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels"
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
#: orjson writes values nested up to this many levels.
_ORJSON_DEPTH = 254
_WRAP = _ORJSON_DEPTH - MAX_JSON_DEPTH


def check_json(value: Any, where: str = "", depth: int = 1) -> None:
    """Raise ValueError (naming where) unless ``value`` is storable as it is."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise ValueError(f"the number at {where or 'top level'} is outside the 64-bit range")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"the number at {where or 'top level'} is not finite")
    elif depth > MAX_JSON_DEPTH:
        raise ValueError(TOO_DEEP)
    elif isinstance(value, dict):
        for k, v in value.items():
            check_json(v, f"{where}.{k}" if where else str(k), depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_json(v, f"{where}[{i}]", depth + 1)


def within_depth(value: Any) -> bool:
    """Whether ``value`` (as orjson parsed it: its numbers are already storable) nests
    at most ``MAX_JSON_DEPTH`` levels: inside ``_WRAP`` lists orjson writes it only
    then (one pass in C, no walk in Python)."""
    for _ in range(_WRAP):
        value = [value]
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError:
        return False
    return True


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_object(text: str | None, option: str) -> dict[str, Any]:
    """The JSON object of a command-line option (``{}`` when not given), storable as
    it is; InvalidInput naming ``option`` otherwise."""
    try:
        value = json.loads(text, parse_constant=_no_constant) if text else {}
    except (ValueError, RecursionError) as exc:
        detail = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise InvalidInput(f"{option} must be a JSON object: {detail}") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{option} must be a JSON object")
    try:
        check_json(value)
    except ValueError as exc:
        raise InvalidInput(f"{option} cannot be stored: {exc}") from None
    return value


def write_json(value: Any, *, sort_keys: bool = False) -> bytes:
    """``orjson.dumps``; for a value nested deeper than orjson writes (254 levels, which
    versions before ``MAX_JSON_DEPTH`` let a big body's field reach inside its event),
    the standard library's JSON, which writes what orjson reads."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except orjson.JSONEncodeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"),
                          sort_keys=sort_keys).encode()
