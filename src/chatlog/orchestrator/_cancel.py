"""Cancellation that survives redis-py.

redis-py's asyncio client may finish a command whose task was cancelled and
return its reply as if nothing happened (it protects the connection from a
half-read reply). The cancel request is then only visible as
``Task.cancelling()``; a loop that never checks it runs forever.
"""

from __future__ import annotations

from chatlog.eventstore.connection import raise_if_cancelled

#: The orchestrator's name for :func:`chatlog.eventstore.raise_if_cancelled` (one implementation).
raise_if_cancelling = raise_if_cancelled


async def check_cancelled() -> None:
    """:func:`raise_if_cancelled` as an awaitable (an ``on_idle`` callback)."""
    raise_if_cancelled()
