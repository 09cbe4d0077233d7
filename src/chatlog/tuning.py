"""Process tuning for a long-running chatlog service: the garbage collector and the GIL.

A service (``chatlog serve``, an application running the orchestrator's waits)
starts with a large heap that never becomes garbage (modules, pydantic schemas,
the routes) and then allocates many short-lived objects per request or event.
With CPython's default thresholds (700, 10, 10) the collector runs every few
hundred allocations and, during a burst, walks the whole heap now and then:
waking 10,000 waits at once spent about a third of its CPU in full collections
over objects that were never going to be freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
from collections.abc import Callable, Iterator

__all__ = ["GC_THRESHOLD", "SETTLED_THRESHOLD", "SWITCH_INTERVAL", "gc_paused",
           "serving_loop_factory", "settle_heap", "tune_runtime"]

#: Thresholds while serving (CPython's default is 700, 10, 10): young collections
#: every 100,000 allocations, full ones hardly ever.
GC_THRESHOLD = (100_000, 50, 1000)
#: What :func:`settle_heap` sets when it finds CPython's defaults: young collections
#: every 50,000 allocations, full ones still now and then (every ~10 million), so a
#: library user's long-lived cycles are still freed.
SETTLED_THRESHOLD = (50_000, 20, 10)
#: Seconds a thread may hold the GIL while another waits for it (CPython: 0.005).
SWITCH_INTERVAL = 0.001
#: CPython's own thresholds: what :func:`settle_heap` leaves alone when it finds others.
DEFAULT_THRESHOLD = (700, 10, 10)

_settled = False


def settle_heap(*, threshold: tuple[int, int, int] | None = None) -> bool:
    """Once per process (again when given ``threshold``): collect, freeze what survives
    (start-up objects are never walked by the collector again) and set ``threshold``,
    or :data:`SETTLED_THRESHOLD` unless the application set thresholds of its own.
    True when it did so now.

    ``chatlog serve`` calls it once it listens; :meth:`Orchestrator.start
    <chatlog.orchestrator.Orchestrator.start>` calls it too, as thousands of waits
    make every full collection long.
    """
    global _settled
    if _settled and threshold is None:
        return False
    _settled = True
    gc.collect()
    gc.freeze()
    if threshold is not None:
        gc.set_threshold(*threshold)
    elif gc.get_threshold() == DEFAULT_THRESHOLD:
        gc.set_threshold(*SETTLED_THRESHOLD)
    return True


def tune_runtime() -> None:
    """Keep garbage collection and the projector's thread out of the latency tail
    (what ``chatlog serve`` does once it listens).

    Freezing what start-up built and collecting the young generation less often
    took the HTTP append p99 from ~35 ms to ~24 ms in bench/bench_http.py
    (64 clients).

    The projector's thread holds the GIL while it folds a batch; with
    CPython's 5 ms switch interval the event loop could wait that long for
    it several times in one request. At 1 ms, HTTP append p99 was
    22.1-22.4 ms (best of 3) against 24.4-25.8 ms in alternating runs of the
    same benchmark, at the same throughput.
    """
    settle_heap(threshold=GC_THRESHOLD)
    sys.setswitchinterval(SWITCH_INTERVAL)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection for a synchronous stretch of work (no ``await``
    inside), restored after: for loops that allocate hundreds of thousands of
    short-lived tuples, lists and bytes, none in a cycle (a rebuild's load, an archive
    read, a segment's ids), whose allocations would otherwise trigger collections
    walking the process's long-lived heap (~12% of a rebuild, a third of an archive
    read: measured)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def serving_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``chatlog serve`` runs on: uvloop's when it is importable (a
    dependency where it builds: not on Windows, not on PyPy), else None (asyncio's own).

    Measured in bench/bench_http.py (``--quick``, 3 interleaved pairs on a loaded
    2-core machine): ``POST .../messages`` at 64 clients 0.44-0.69x of bare aiohttp
    against 0.38-0.51x on asyncio's loop, the server's CPU per request 200-219 us
    against 207-285 us.
    """
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
