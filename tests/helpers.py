"""Small builders shared by the tests."""

from __future__ import annotations

import asyncio
import inspect
import os
import time
import uuid
from collections.abc import Awaitable, Callable

from chatlog.events import MessageAppended, NewEvent
from chatlog.identity import normalize_project_id


def message(
    project: str = "Blog-Project",
    thread_id: str = "thread-1",
    content: str = "hello",
    *,
    role: str = "user",
    event_id: uuid.UUID | None = None,
) -> NewEvent:
    key = normalize_project_id(project)
    return NewEvent.of(
        MessageAppended(thread_id=thread_id, role=role, content=content),
        project=key.key,
        project_name=key.display,
        aggregate_type="thread",
        aggregate_id=thread_id,
        event_id=event_id,
    )


async def eventually(
    check: Callable[[], object | Awaitable[object]],
    *,
    timeout: float = 10.0,
    interval: float = 0.01,
    what: str = "the condition",
) -> object:
    """Await until ``check()`` (sync or async) returns a truthy value; return it.

    The one way tests wait for something to happen: on a slow machine it just
    waits longer, instead of silently testing another path the way a fixed
    ``sleep`` does. Fails the test with ``what`` when ``timeout`` passes.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s")
        await asyncio.sleep(interval)


def wait_until(check: Callable[[], object], *, timeout: float = 10.0,
               interval: float = 0.01, what: str = "the condition") -> object:
    """:func:`eventually` for a test without an event loop (blocking)."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s")
        time.sleep(interval)
    return result


def open_sockets() -> set[str]:
    """This process's socket file descriptors (by fd number and inode)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            found.add(f"{fd}:{target}")
    return found
