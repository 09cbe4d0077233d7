"""The archive's series in ``/metrics``: what this node's archiver did, its hot window,
and how much the hot tier (each partition's Redis stream) holds now.

* ``chatlog_archive_*_total``: events sealed, segments published, events trimmed from
  Redis, passes run and passes failed, since this node's archiver started (all 0
  when this process runs no archiver);
* ``chatlog_archive_last_success_timestamp_seconds``, ``chatlog_archive_hot_window_*``:
  only when it runs one;
* ``chatlog_hot_events{partition}``, ``chatlog_hot_oldest_age_seconds{partition}``:
  read from Redis at scrape time, archiver or not, so that a hot tail that keeps
  growing (archiver stopped, failing, or off) can be alerted on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from chatlog.eventstore import EventStore
from chatlog.eventstore.archiver import Archiver
from chatlog.eventstore.codec import parse_position
from chatlog.eventstore.connection import text
from chatlog.http.metrics import Metrics

#: (series, ArchiverCounters attribute, help).
COUNTERS = (
    ("chatlog_archive_events", "events_archived",
     "Events sealed into archive segments by this node's archiver"),
    ("chatlog_archive_segments", "segments_published",
     "Archive segments this node's archiver published"),
    ("chatlog_archive_trimmed", "events_trimmed",
     "Archived events this node's archiver removed from Redis (the hot tier)"),
    ("chatlog_archive_passes", "passes", "Archiver passes run (failed ones included)"),
    ("chatlog_archive_failed_passes", "failed_passes",
     "Archiver passes that failed (each is retried at the next interval)"),
)


def watch_archive(metrics: Metrics, store: EventStore,
                  archiver: Callable[[], Archiver | None]) -> None:
    """Add the archive's series to ``metrics`` (``archiver()``: this process's archiver,
    or None)."""
    metrics.registry.register(ArchiverCollector(archiver))
    hot_events = Gauge("chatlog_hot_events",
                       "Events each partition keeps in Redis (the hot tier) now",
                       ["partition"], registry=metrics.registry)
    oldest_age = Gauge("chatlog_hot_oldest_age_seconds",
                       "Age of each partition's oldest event in Redis (0 when it holds none)",
                       ["partition"], registry=metrics.registry)

    async def collect() -> None:
        with contextlib.suppress(Exception):  # Redis down: keep the last values
            async with asyncio.timeout(1.0):
                for p, (count, age) in enumerate(await hot_tier(store)):
                    hot_events.labels(str(p)).set(count)
                    oldest_age.labels(str(p)).set(age)

    metrics.collectors.append(collect)


async def hot_tier(store: EventStore) -> list[tuple[int, float]]:
    """Per partition: the events its Redis stream holds, and its oldest one's age in s."""
    redis: Any = store.redis
    now = time.time()

    async def one(p: int) -> tuple[int, float]:
        key = store.keys.log(p)
        count = int(await redis.xlen(key))
        first = await redis.xrange(key, count=1) if count else []
        if not first:
            return count, 0.0
        ms, _ = parse_position(text(first[0][0]))
        return count, max(0.0, now - ms / 1000)

    return list(await asyncio.gather(*(one(p) for p in range(store.partitions))))


class ArchiverCollector(Collector):
    """The archiver's totals, read when scraped (zero without an archiver)."""

    def __init__(self, archiver: Callable[[], Archiver | None]) -> None:
        self._archiver = archiver

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        archiver = self._archiver()
        counters = archiver.counters if archiver is not None else None
        for name, attribute, doc in COUNTERS:
            yield CounterMetricFamily(name, doc, value=getattr(counters, attribute, 0))
        if archiver is None:
            return
        yield GaugeMetricFamily(
            "chatlog_archive_last_success_timestamp_seconds",
            "When this node's archiver last finished a pass without error (0: not yet)",
            value=archiver.counters.last_success)
        yield GaugeMetricFamily(
            "chatlog_archive_hot_window_events",
            "The hot window's bound in events per partition (CHATLOG_HOT_EVENTS; 0: off)",
            value=archiver.window.events)
        yield GaugeMetricFamily(
            "chatlog_archive_hot_window_seconds",
            "The hot window's bound in seconds (CHATLOG_HOT_SECONDS; 0: off)",
            value=archiver.window.seconds)
