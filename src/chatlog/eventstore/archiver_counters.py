"""What an archiver has done since it started, for ``/metrics`` (kept apart from
``archiver.py``, which only calls :meth:`ArchiverCounters.counting` around a pass)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, TypeVar


class PassFigures(Protocol):
    """What one partition's pass reports (``archiver.PassResult``)."""

    @property
    def archived(self) -> int: ...
    @property
    def segments(self) -> int: ...
    @property
    def trimmed(self) -> int: ...


R = TypeVar("R", bound=Sequence["PassFigures"])


@dataclass
class ArchiverCounters:
    """Totals since start: events sealed into segments, segments published, events
    removed from Redis, passes run and passes that failed, and when the last pass
    succeeded (0: none yet)."""

    events_archived: int = 0
    segments_published: int = 0
    events_trimmed: int = 0
    passes: int = 0
    failed_passes: int = 0
    last_success: float = 0.0

    def counting(self) -> _Pass:
        """``with counters.counting() as count: return count(results)``: adds a pass's
        results, or counts it failed when the block raises (a cancellation is not a
        failure)."""
        return _Pass(self)

    def add(self, results: Sequence[PassFigures]) -> None:
        for r in results:
            self.events_archived += r.archived
            self.segments_published += r.segments
            self.events_trimmed += r.trimmed
        self.last_success = time.time()


class _Pass:
    def __init__(self, counters: ArchiverCounters) -> None:
        self._counters = counters

    def __enter__(self) -> _Pass:
        self._counters.passes += 1
        return self

    def __call__(self, results: R) -> R:
        self._counters.add(results)
        return results

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is not None and not issubclass(kind, asyncio.CancelledError):
            self._counters.failed_passes += 1
