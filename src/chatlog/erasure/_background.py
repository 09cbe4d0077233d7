"""Erasure's heavy work, run so that it yields the CPU to appends.

An erasure's archive rewrite reads, filters, compresses and verifies Parquet
segments: seconds of CPU in a process (``serve``) whose event loop answers
appends. It runs in a thread of its own at the lowest CPU priority (Linux nice
19 applies per thread): the scheduler runs it when nothing else wants the CPU,
so appends keep their latency and the erasure still finishes on an idle machine.

Likewise the append-only file rewrite of a server chatlog owns (the embedded
Valkey) runs in a child process the server forks: its priority is lowered the
same way (:func:`lower_children`), so the server's own thread keeps the CPU.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

#: The niceness of the erasure's worker thread (19: the lowest priority).
NICENESS = 19


def _lower_priority() -> None:
    try:  # per thread on Linux (PRIO_PROCESS with a thread id); elsewhere harmless
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICENESS)
    except (AttributeError, OSError):
        pass


async def run_yielding(fn: Callable[[], T]) -> T:
    """``fn()`` in a new low-priority thread (never a pooled one: the priority cannot
    be raised back); awaited like :func:`asyncio.to_thread`."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: object) -> None:
        if done.cancelled():
            return
        if ok:
            done.set_result(value)  # type: ignore[arg-type]
        else:
            assert isinstance(value, BaseException)
            done.set_exception(value)

    def target() -> None:
        _lower_priority()
        try:
            result: object = fn()
        except BaseException as exc:  # handed to the awaiting task
            loop.call_soon_threadsafe(settle, False, exc)
        else:
            loop.call_soon_threadsafe(settle, True, result)

    threading.Thread(target=target, name="chatlog-erasure", daemon=True).start()
    return await done


def lower_children(pid: int) -> list[int]:
    """Lower the CPU priority of the child processes of ``pid`` (Linux ``/proc``);
    return the ones lowered (none where ``/proc`` does not list children)."""
    lowered = []
    try:
        listed = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    for child in listed:
        try:
            os.setpriority(os.PRIO_PROCESS, int(child), NICENESS)
        except (OSError, ValueError):
            continue
        lowered.append(int(child))
    return lowered
