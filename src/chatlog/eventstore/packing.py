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


_CLASSES: dict[tuple[type[AbstractConnection], type | None], type[AbstractConnection]] = {}


def hiredis_packing(
    cls: type[AbstractConnection], *, first: type[AbstractConnection] | None = None
) -> type[AbstractConnection]:
    """``cls`` (TCP, unix socket or TLS connection), packing with hiredis.

    ``first``: a mixin that goes before both (the cluster's safe send).
    """
    key = (cls, first)
    if key not in _CLASSES:
        bases = (_HiredisPacking, cls) if first is None else (first, _HiredisPacking, cls)
        name = f"Hiredis{cls.__name__}" if first is None else f"ClusterHiredis{cls.__name__}"
        _CLASSES[key] = type(name, bases, {})
    return _CLASSES[key]
