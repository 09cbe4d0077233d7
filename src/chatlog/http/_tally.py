"""Per-request figures counted in plain Python, read by Prometheus when it scrapes.

prometheus_client takes a lock on every ``inc`` and ``observe`` (a histogram:
two, after a loop over its buckets): 1-2 us each, and an appended message made
five of them (its status, its outcome, its route's latency, the store's append
latency, the group commit's size). The event loop is the only writer of these
(handlers, middleware and the store's append path all run on it), so a list
index and an add do; the scrape reads the same figures:

- :class:`FastHistogram` is a collector of its own (a histogram family built
  at scrape time, the same series as ``prometheus_client.Histogram``'s);
- :class:`PendingCount` adds what it counted to a Prometheus counter when
  :meth:`Metrics.render <chatlog.http.metrics.Metrics.render>` flushes it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = ["FastHistogram", "PendingCount"]

_INF = float("inf")


class HistogramChild:
    """One label set's buckets (not cumulative) and sum."""

    __slots__ = ("_bounds", "counts", "total")

    def __init__(self, bounds: list[float]) -> None:
        self._bounds = bounds
        self.counts = [0] * len(bounds)
        self.total = 0.0

    def observe(self, value: float) -> None:
        # The first bucket whose bound is >= value: prometheus' "le" rule.
        self.counts[bisect_left(self._bounds, value)] += 1
        self.total += value


class FastHistogram(Collector):
    """A histogram with ``prometheus_client.Histogram``'s series and a cheap
    ``observe`` (event-loop thread only)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (), *,
                 buckets: Sequence[float], registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds[-1] != _INF:
            bounds.append(_INF)
        self._bounds = bounds
        self._le = [floatToGoString(b) for b in bounds]  # type: ignore[no-untyped-call]
        self._children: dict[tuple[str, ...], HistogramChild] = {}
        if not self.labelnames:  # exported (all zero) from the start, as Histogram does
            self._children[()] = HistogramChild(bounds)
        registry.register(self)

    def labels(self, *values: str) -> HistogramChild:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: {len(self.labelnames)} label values expected")
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = HistogramChild(self._bounds)
        return child

    def observe(self, value: float) -> None:
        """Observe ``value`` (a histogram without labels)."""
        self._children[()].observe(value)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation,
                                       labels=list(self.labelnames))
        for key, child in list(self._children.items()):
            cumulative = 0
            buckets: list[tuple[str, Any]] = []
            for le, n in zip(self._le, child.counts, strict=True):
                cumulative += n
                buckets.append((le, float(cumulative)))
            family.add_metric(list(key), buckets, child.total)
        yield family


class PendingCount:
    """Increments of a Prometheus counter (child) gathered until :meth:`flush`."""

    __slots__ = ("_counter", "n")

    def __init__(self, counter: Any) -> None:
        self._counter = counter
        self.n = 0

    def inc(self) -> None:
        self.n += 1

    def flush(self) -> None:
        n, self.n = self.n, 0
        if n:
            self._counter.inc(n)
