"""Prometheus metrics of one app (its own registry, so apps never share counters).

What an operator alerts on (docs/operations.md lists every series):

* HTTP: answers by status, request latency by route *template* and method
  (bounded cardinality: ``/v1/projects/{project}/messages``, never raw paths).
* Appends: HTTP outcomes, the store's append latency and group-commit size
  (every append this process makes: HTTP, orchestrator, in-process workers),
  and ``chatlog_events_total{type}``: events of every type as they reach the
  read models, whoever wrote them (HTTP, CLI, import, orchestrator, another
  node), since they are counted from the log itself.
* Projection lag in events and seconds, SSE subscribers and cut-offs, workflows
  by state, timeouts fired, long-polls waiting, jobs waiting / running / dead,
  retries and dead-letterings, restarts of the embedded Valkey.

No ``*_created`` series: they double the output and nobody alerts on them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from chatlog.http._tally import FastHistogram, PendingCount

disable_created_metrics()  # type: ignore[no-untyped-call]

#: Seconds: from a cache hit to a slow fsync'd group commit under load.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Appends sent to the server in one round trip.
GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
#: Routes left out of the latency histogram: they last as long as the client stays.
STREAMING_ROUTES = frozenset({"/v1/events/stream"})
#: The route whose ``wait_for`` query is a long-poll.
WORKFLOW_ROUTE = "/v1/projects/{project}/workflows/{workflow_id}"
#: Event types that feed a counter of their own.
TIMED_OUT = "workflow.timed_out"
#: A job delivered again (after a failure or a lapsed lease): one retry each.
RETRIED = "job.reclaimed"
FAILED = "job.failed"
DEAD_LETTERED = "job.dead_lettered"


class Metrics:
    """Every series of one app; the app and its parts feed it through small hooks."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.appends = Counter(
            "chatlog_appends", "Messages appended over HTTP, by outcome", ["outcome"], registry=r)
        self.responses = Counter(
            "chatlog_http_responses", "HTTP answers by status", ["status"], registry=r)
        self.errors = Counter(
            "chatlog_http_errors", "HTTP error answers (4xx/5xx) by status", ["status"],
            registry=r)
        # Fed once or more per request: histograms without prometheus_client's locks.
        self.request_seconds = FastHistogram(
            "chatlog_http_request_duration_seconds",
            "HTTP request latency by route template and method (SSE streams excluded)",
            ["route", "method"], buckets=LATENCY_BUCKETS, registry=r)
        self.append_seconds = FastHistogram(
            "chatlog_append_duration_seconds",
            "Store appends of this process, from the call to the acknowledgement",
            buckets=LATENCY_BUCKETS, registry=r)
        self.group_commit_size = FastHistogram(
            "chatlog_group_commit_size", "Appends sent to the server in one round trip",
            buckets=GROUP_BUCKETS, registry=r)
        self.events = Counter(
            "chatlog_events", "Events by type as they reach the read models (every writer)",
            ["type"], registry=r)
        self.sse_subscribers = Gauge(
            "chatlog_sse_subscribers", "Live Server-Sent Events subscribers", registry=r)
        self.sse_cutoffs = Counter(
            "chatlog_sse_cutoffs",
            "Slow SSE subscribers dropped because their buffer overflowed", registry=r)
        self.projection_lag = Gauge(
            "chatlog_projection_lag_events", "Events the read models are behind the log",
            registry=r)
        self.projection_lag_seconds = Gauge(
            "chatlog_projection_lag_seconds",
            "Age of the oldest event the read models have not applied (0 when caught up)",
            registry=r)
        self.workflows = Gauge(
            "chatlog_workflows", "Workflows in the read model by state", ["state"], registry=r)
        self.workflow_timeouts = Counter(
            "chatlog_workflow_timeouts", "Workflow waits that timed out (workflow.timed_out)",
            registry=r)
        self.workflow_waits = Gauge(
            "chatlog_workflow_waits", "Callers blocked in a workflow wait or long-poll",
            registry=r)
        self.long_polls = Gauge(
            "chatlog_workflow_long_polls", "Workflow long-polls (wait_for) waiting now",
            registry=r)
        self.jobs = Gauge(
            "chatlog_jobs",
            "Jobs by state: waiting (not yet delivered), running (delivered, not finished), "
            "dead (dead letters)", ["state"], registry=r)
        self.jobs_retried = Counter(
            "chatlog_jobs_retried",
            "Jobs delivered again after a failed delivery or a lapsed lease (one per retry)",
            registry=r)
        self.jobs_failed = Counter(
            "chatlog_jobs_failed", "Job deliveries whose handler failed", registry=r)
        self.jobs_dead_lettered = Counter(
            "chatlog_jobs_dead_lettered", "Jobs moved to the dead-letter stream", registry=r)
        self.valkey_restarts = Counter(
            "chatlog_valkey_restarts", "Restarts of the embedded Valkey after it died",
            registry=r)
        self._by_status: dict[int, list[PendingCount]] = {}
        self._events_by_type: dict[str, Any] = {}
        #: Counts of the request path, added to their counters when scraped.
        self._pending: list[PendingCount] = []
        self.created = self._pending_count(self.appends.labels("created"))
        self.duplicates = self._pending_count(self.appends.labels("duplicate"))
        #: ``async () -> None`` callables run before each scrape (gauges read at scrape time).
        self.collectors: list[Callable[[], Awaitable[None]]] = []

    # -- hooks ------------------------------------------------------------------

    def observe_status(self, status: int) -> None:
        counters = self._by_status.get(status)
        if counters is None:
            label = str(status)
            counters = [self._pending_count(self.responses.labels(label))]
            if status >= 400:
                counters.append(self._pending_count(self.errors.labels(label)))
            self._by_status[status] = counters
        for counter in counters:
            counter.inc()

    def _pending_count(self, counter: Any) -> PendingCount:
        pending = PendingCount(counter)
        self._pending.append(pending)
        return pending

    def appended(self, seconds: float) -> None:
        """The store acknowledged an append after ``seconds`` (store hook)."""
        self.append_seconds.observe(seconds)

    def committed(self, group_size: int) -> None:
        """The store sent ``group_size`` appends in one round trip (store hook)."""
        self.group_commit_size.observe(group_size)

    def applied(self, events: Sequence[Any]) -> None:
        """The projector applied ``events`` (they carry ``type``): count them by type
        (one ``inc`` per type of the batch: each takes a lock)."""
        by_type: dict[str, int] = {}
        for ev in events:
            kind = ev.type
            by_type[kind] = by_type.get(kind, 0) + 1
        for kind, n in by_type.items():
            counter = self._events_by_type.get(kind)
            if counter is None:
                counter = self._events_by_type[kind] = self.events.labels(kind)
            counter.inc(n)
            if kind == TIMED_OUT:
                self.workflow_timeouts.inc(n)
            elif kind == RETRIED:
                self.jobs_retried.inc(n)
            elif kind == FAILED:
                self.jobs_failed.inc(n)
            elif kind == DEAD_LETTERED:
                self.jobs_dead_lettered.inc(n)

    def watch_projector(self, projector: Callable[[], Any]) -> None:
        """Count the projector's failed batches and self-repairs at scrape time
        (``projector()`` gives the projector, or None when there is none)."""
        self.registry.register(_ProjectorCollector(projector))

    async def render(self) -> bytes:
        for pending in self._pending:
            pending.flush()
        for collect in self.collectors:
            await collect()
        return generate_latest(self.registry)


class _ProjectorCollector(Collector):
    """The projector's own counters, read when scraped."""

    def __init__(self, projector: Callable[[], Any]) -> None:
        self._projector = projector

    def collect(self) -> Iterator[CounterMetricFamily]:
        projector = self._projector()
        yield CounterMetricFamily(
            "chatlog_projector_batch_failures",
            "Projector batches (or repairs) that failed; each is retried, and the read "
            "model is rebuilt after a few in a row",
            value=getattr(projector, "failures_total", 0))
        yield CounterMetricFamily(
            "chatlog_projector_repairs",
            "Times the projector repaired its read model by itself (the partitions whose "
            "events the log lost, or the whole model after a batch kept failing)",
            value=getattr(projector, "repairs", 0))
