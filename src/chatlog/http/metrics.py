"""Prometheus metrics of one app (its own registry, so apps never share counters)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class Metrics:
    """Appends, answers by status, SSE subscribers and cut-offs, projection lag."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.appends = Counter(
            "chatlog_appends", "Messages appended over HTTP", ["outcome"], registry=self.registry
        )
        self.responses = Counter(
            "chatlog_http_responses", "HTTP answers by status", ["status"], registry=self.registry
        )
        self.errors = Counter(
            "chatlog_http_errors", "HTTP error answers (4xx/5xx) by status", ["status"],
            registry=self.registry,
        )
        self.sse_subscribers = Gauge(
            "chatlog_sse_subscribers", "Live Server-Sent Events subscribers", registry=self.registry
        )
        self.sse_cutoffs = Counter(
            "chatlog_sse_cutoffs", "SSE subscribers cut off because their buffer overflowed",
            registry=self.registry,
        )
        self.workflow_waits = Gauge(
            "chatlog_workflow_waits", "Callers blocked in a workflow wait or long-poll",
            registry=self.registry,
        )
        self.projection_lag = Gauge(
            "chatlog_projection_lag_events", "Events the read models are behind the log",
            registry=self.registry,
        )
        self._by_status: dict[int, list[Any]] = {}
        self.created = self.appends.labels("created")
        self.duplicates = self.appends.labels("duplicate")

    def observe_status(self, status: int) -> None:
        counters = self._by_status.get(status)
        if counters is None:
            label = str(status)
            counters = [self.responses.labels(label)]
            if status >= 400:
                counters.append(self.errors.labels(label))
            self._by_status[status] = counters
        for counter in counters:
            counter.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
