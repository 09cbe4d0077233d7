"""Work on big JSON documents in a process of its own, so it never holds this
process's GIL.

A C parser or serializer (orjson, pydantic-core) holds the GIL for as long as it
runs: 25-60 ms for a legal 1 MB body of half a million tiny values. In a thread
that still stops the event loop, so the HTTP layer parses big message bodies, and
the projector decodes big message events, in one worker process started on first
use ("spawn": nothing of this process's threads or sockets is inherited). What
comes back is small fields and JSON as bytes (embedded with ``orjson.Fragment``),
never the half-million objects themselves.
"""

from __future__ import annotations

import asyncio
import atexit
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

T = TypeVar("T")

#: Documents from this size on (bytes) go to the worker process.
BIG = 65_536

_pool: ProcessPoolExecutor | None = None
_lock = threading.Lock()


def _executor() -> ProcessPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(max_workers=1,
                                        mp_context=multiprocessing.get_context("spawn"))
        return _pool


def _broken(pool: ProcessPoolExecutor) -> None:
    """Forget a pool whose worker died, so the next call starts a new one."""
    global _pool
    with _lock:
        if _pool is pool:
            _pool = None
    pool.shutdown(wait=False, cancel_futures=True)


async def run(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in the worker process, awaited from the event loop (``fn`` and its
    arguments are pickled: a module-level function). A worker that died is replaced
    and the call made once more; where no process can be started (no semaphores),
    it runs in a thread."""
    for attempt in (1, 2):
        try:
            pool = _executor()
        except (OSError, NotImplementedError):
            return await asyncio.to_thread(fn, *args)
        try:
            return await asyncio.wrap_future(pool.submit(fn, *args))
        except BrokenProcessPool:
            _broken(pool)
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def run_sync(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in the worker process, from a thread (not the event loop's)."""
    for attempt in (1, 2):
        try:
            pool = _executor()
        except (OSError, NotImplementedError):
            return fn(*args)
        try:
            return pool.submit(fn, *args).result()
        except BrokenProcessPool:
            _broken(pool)
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def shutdown() -> None:
    """Stop the worker process (if one was started)."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown)
