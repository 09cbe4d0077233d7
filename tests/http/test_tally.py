"""The request path's cheap metrics scrape exactly as prometheus_client's own would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from chatlog.http._tally import FastHistogram, PendingCount
from chatlog.http.metrics import GROUP_BUCKETS, LATENCY_BUCKETS

#: On a bucket's bound, between bounds, below the first, beyond the last, zero.
LATENCIES = (0.0, 0.0005, 0.001, 0.0010001, 0.003, 0.025, 0.07, 9.99, 10.0, 10.5, 300.0)


def test_fast_histogram_scrapes_as_prometheus_histogram() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    fast = FastHistogram("x_seconds", "doc", ["route", "method"], buckets=LATENCY_BUCKETS,
                         registry=ours)
    plain = Histogram("x_seconds", "doc", ["route", "method"], buckets=LATENCY_BUCKETS,
                      registry=theirs)
    fast_one = FastHistogram("one", "doc", buckets=GROUP_BUCKETS, registry=ours)
    plain_one = Histogram("one", "doc", buckets=GROUP_BUCKETS, registry=theirs)
    # Before any observation: the histogram without labels is exported, all zero.
    assert generate_latest(ours) == generate_latest(theirs)
    for value in LATENCIES:
        fast.labels("/a/{b}", "POST").observe(value)
        plain.labels("/a/{b}", "POST").observe(value)
    fast.labels("/c", "GET").observe(0.2)
    plain.labels("/c", "GET").observe(0.2)
    for size in (1, 2, 3, 64, 65, 512, 513):
        fast_one.observe(size)
        plain_one.observe(size)
    assert generate_latest(ours) == generate_latest(theirs)


def test_pending_count_reaches_its_counter_on_flush() -> None:
    registry = CollectorRegistry()
    counter = Counter("n", "doc", ["outcome"], registry=registry)
    pending = PendingCount(counter.labels("created"))
    for _ in range(3):
        pending.inc()
    assert registry.get_sample_value("n_total", {"outcome": "created"}) == 0.0
    pending.flush()
    pending.flush()  # nothing more counted: nothing added
    assert registry.get_sample_value("n_total", {"outcome": "created"}) == 3.0
