"""Cancellation that survives redis-py.

redis-py's asyncio client may finish a command whose task was cancelled and
return its reply as if nothing happened (it protects the connection from a
half-read reply). The cancel request is then only visible as
``Task.cancelling()``; a loop that never checks it runs forever.
"""

from __future__ import annotations

import asyncio


def raise_if_cancelling() -> None:
    """Raise ``CancelledError`` if the current task was asked to stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def check_cancelled() -> None:
    """:func:`raise_if_cancelling` as an awaitable (an ``on_idle`` callback)."""
    raise_if_cancelling()
