"""The app's one middleware: problem+json answers, request metrics and stats timing.

They were three middlewares (metrics, stats, problems); each one is another
coroutine and another wrapped handler per request, on every request of the
API. One pass does the same, in the same order: the URL check and the
problem+json answer innermost, the status counted, then the latency observed
once for the route's histogram and for the stats sampler.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from chatlog.http.metrics import STREAMING_ROUTES, WORKFLOW_ROUTE, Metrics
from chatlog.http.problems import Handler, check_url, problem_for
from chatlog.http.stats import STATS, UNTIMED

__all__ = ["make_middleware"]


def make_middleware(metrics: Metrics) -> Any:
    """The middleware of an app whose metrics are ``metrics``."""
    observe_status = metrics.observe_status
    long_polls = metrics.long_polls
    histogram = metrics.request_seconds
    #: (route, method) -> its histogram child (``labels()`` takes a lock and builds a key).
    timers: dict[tuple[str, str], Any] = {}
    clock = time.perf_counter

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        long_poll = route == WORKFLOW_ROUTE and "wait_for" in request.query
        if long_poll:
            long_polls.inc()
        start = clock()
        try:
            # answer_problems inline: a coroutine less per request.
            try:
                check_url(request)
                response = await handler(request)
            except Exception as exc:
                if request.writer.output_size > 0:
                    # A streamed answer is under way: a problem document cannot follow
                    # it. aiohttp logs the error and closes the connection, so the
                    # client sees a broken answer, not a second one inside the first.
                    raise
                response = problem_for(request, exc)
            observe_status(response.status)
            return response
        finally:
            took = clock() - start
            if long_poll:
                long_polls.dec()
            if route not in STREAMING_ROUTES:
                key = (route, request.method)
                timer = timers.get(key)
                if timer is None:
                    timer = histogram.labels(*key)
                    if len(timers) < 1000:  # methods are the client's to spell
                        timers[key] = timer
                timer.observe(took)
            stats = request.app.get(STATS)
            if stats is not None and request.path not in UNTIMED:
                stats.observe(took)

    return middleware
