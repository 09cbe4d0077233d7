"""Pack commands with hiredis's C packer instead of redis-py's pure-Python one.

redis-py's asyncio connections build each command's RESP bytes in Python
(about 9 us for an append's 15 arguments); ``hiredis.pack_command`` does it in
about 1 us. Arguments hiredis does not take (None, bool, bytearray, enums)
fall back to redis-py's packer, so errors and encodings stay redis-py's.
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio.connection import AbstractConnection


class _HiredisPacking(AbstractConnection):
    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        # As redis-py does: "CONFIG GET" and the like go as separate arguments.
        if isinstance(first, str) and " " in first:
            args = (*first.encode().split(), *args[1:])
        elif isinstance(first, bytes) and b" " in first:
            args = (*first.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            return super().pack_command(*args)


_CLASSES: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def hiredis_packing(cls: type[AbstractConnection]) -> type[AbstractConnection]:
    """``cls`` (TCP, unix socket or TLS connection), packing with hiredis."""
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"Hiredis{cls.__name__}", (_HiredisPacking, cls), {})
    return _CLASSES[cls]
