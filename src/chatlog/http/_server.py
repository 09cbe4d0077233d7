"""The HTTP server under the app: bounded connections, parser errors as problem+json.

aiohttp answers a request its parser rejects (bad framing, oversized
headers, an invalid method...) from its protocol handler, before any
middleware runs, with a ``text/plain`` page and an ERROR traceback in the
log. :class:`ChatlogRequestHandler` answers those as problem+json too, and
logs one rate-limited WARNING line instead of a traceback.

It also bounds what a connection may hold:

- **header timeout**: a connection must deliver a request line and headers
  within ``header_timeout`` seconds of opening, or of its first byte after an
  idle keep-alive pause; otherwise it is closed (slowloris, idle sockets);
- **keep-alive timeout**: an idle connection between requests is closed after
  ``keepalive_timeout`` seconds (aiohttp's own timer);
- **body timeout**: enforced where bodies are read (:func:`read_body`);
- **connection cap**: at ``max_connections`` open connections, a new one
  evicts the connection that has been idle longest; when none is idle it is
  answered 503 and closed. The cap is kept below the process's file limit.

Requests being answered (an SSE stream included) are never cut by these
timers: they only run while a connection waits for a request.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from aiohttp.web_request import BaseRequest

from chatlog.http.problems import PROBLEM_TYPE, problem

log = logging.getLogger("chatlog.http.server")

#: File descriptors kept free for Redis connections, SQLite, logs... when the
#: connection cap is derived from the process's file limit.
FD_RESERVE = 64


@dataclass(frozen=True)
class ConnectionLimits:
    """How long a connection may take, and how many may be open at once."""

    header_timeout: float = 10.0
    keepalive_timeout: float = 30.0
    body_timeout: float = 30.0
    max_connections: int = 1000

    def effective_max_connections(self) -> int:
        """``max_connections``, lowered to fit the process's open-file limit."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        return max(8, min(self.max_connections, soft - FD_RESERVE))


class RateLimitedLog:
    """One WARNING line per ``interval`` seconds per kind, counting what it left out."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, kind: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last[kind] = now
        more = self._suppressed.pop(kind, 0)
        suffix = f" ({more} more like it in the last {now - last:.0f} s)" if more and last else ""
        self.logger.warning(message + suffix, *args)


#: One per process: malformed requests and disconnects from any connection.
WARNINGS = RateLimitedLog(log)


def _clean(text: str, limit: int = 200) -> str:
    """A parser message fit for a problem detail: printable, short."""
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[:limit] + "…"


def parser_problem(status: int, exc: BaseException | None, message: str | None) -> web.Response:
    """The problem document for a request aiohttp's parser (or protocol) rejected."""
    if status >= 500:
        return problem(status, "unexpected server error; it has been logged")
    if isinstance(exc, HttpProcessingError):
        detail = exc.message or message or exc.__class__.__name__
        if 400 <= exc.code < 500:
            status = exc.code
    else:
        detail = message or (str(exc) if exc else "") or "malformed request"
    # aiohttp's messages may quote raw request bytes; keep the first line.
    first = _clean(str(detail).strip().splitlines()[0] if str(detail).strip() else "")
    return problem(status, f"malformed HTTP request: {first or 'rejected by the parser'}")


class ChatlogRequestHandler(RequestHandler):
    """aiohttp's protocol handler with problem+json errors and a header timeout."""

    __slots__ = ("_header_deadline", "_header_handle", "_header_timeout", "_idle_since",
                 "peer_is_loopback")

    def __init__(self, manager: ChatlogServer, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        #: The loop's timer, kept across requests: arming and disarming per request only
        #: set ``_header_deadline`` (a timer made and cancelled per request cost more than
        #: the rest of the bookkeeping); when it fires early it is set again for the deadline.
        self._header_handle: asyncio.TimerHandle | None = None
        #: When the head being waited for is late (None: not waiting for one).
        self._header_deadline: float | None = None
        #: When it started waiting for a request (None while answering one).
        self._idle_since: float | None = None
        #: Whether the peer is on loopback, once auth has asked (one peer per connection).
        self.peer_is_loopback: bool | None = None

    # -- header timeout -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        manager = self._manager
        super().connection_made(transport)
        self._idle_since = self._loop.time()
        self._arm_header_timer()
        if isinstance(manager, ChatlogServer):
            manager.admit(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._header_deadline = None
        if self._header_handle is not None:
            self._header_handle.cancel()
            self._header_handle = None
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        if self._header_deadline is None and self._header_timeout > 0:
            self._header_deadline = deadline = self._loop.time() + self._header_timeout
            if self._header_handle is None:
                self._header_handle = self._loop.call_at(deadline, self._header_late)

    def _disarm_header_timer(self) -> None:
        self._header_deadline = None

    def _header_late(self) -> None:
        self._header_handle = None
        deadline = self._header_deadline
        if deadline is None:
            return  # disarmed since: the next arming makes a new timer
        if self._loop.time() < deadline - 0.001:  # disarmed and armed again since it was set
            self._header_handle = self._loop.call_at(deadline, self._header_late)
            return
        self._header_deadline = None
        if self.waiting_for_request:
            WARNINGS.warning("header-timeout", "closed a connection from %s: no complete "
                             "request headers within %g s", self._peer(), self._header_timeout)
            self.force_close()

    @property
    def waiting_for_request(self) -> bool:
        """True while no request is being answered or queued on this connection."""
        return (
            not self._request_in_progress
            and not self._messages
            and self.transport is not None
            and not self._force_close
        )

    def data_received(self, data: bytes) -> None:
        if self._idle_since is not None and not self._messages and not self._request_in_progress:
            # The first bytes of a new request after a keep-alive pause: it has
            # header_timeout seconds to complete its head.
            self._arm_header_timer()
        current = self._current_request
        super().data_received(data)
        if self._messages:
            self._disarm_header_timer()
            self._idle_since = None
        if current is not None and self._messages and self._request_in_progress:
            # The parser failed inside the body of the request being answered (a
            # malformed chunk): end that body with the error, so the handler
            # reading it answers instead of waiting for bytes that never come.
            head = self._messages[-1][0]
            err = getattr(head, "exc", None)
            if isinstance(err, HttpProcessingError):
                current.content.set_exception(err)

    async def _handle_request(self, request: BaseRequest, start_time: float | None,
                              request_handler: Any) -> tuple[web.StreamResponse, bool]:
        self._disarm_header_timer()
        self._idle_since = None
        try:
            return await super()._handle_request(request, start_time, request_handler)
        finally:
            self._idle_since = self._loop.time()

    # -- errors ---------------------------------------------------------------------

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """problem+json for what aiohttp answers itself; one rate-limited WARNING line."""
        if isinstance(exc, ConnectionError):
            WARNINGS.warning("disconnect", "client %s went away mid-request: %s",
                             self._peer(), exc.__class__.__name__)
        elif status >= 500:
            log.error("unexpected error answering %s %s", request.method, request.path,
                      exc_info=exc)
        else:
            WARNINGS.warning("malformed", "malformed request from %s answered %d: %s",
                             self._peer(), status,
                             _clean(str(getattr(exc, "message", "") or message or exc), 120))
        if request.writer.output_size > 0:
            raise ConnectionError("the answer had started; the connection is closed")
        resp = parser_problem(status, exc, message)
        resp.force_close()
        return resp

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        if isinstance(exc, ConnectionError | asyncio.CancelledError):
            WARNINGS.warning("disconnect", "client %s went away mid-request", self._peer())
            return
        if isinstance(exc, HttpProcessingError | RequestPayloadError):
            # Draining the rest of a body that was already answered as malformed.
            WARNINGS.warning("malformed", "malformed request body from %s: %s", self._peer(),
                             _clean(str(getattr(exc, "message", "") or exc), 120))
            return
        super().log_exception(*args, **kw)

    def _peer(self) -> str:
        peer = self.peername
        if isinstance(peer, tuple) and peer:
            return str(peer[0])
        return str(peer or "a local socket")

    @property
    def idle_for(self) -> float:
        """Seconds this connection has waited for a request (0 while answering one)."""
        if self._idle_since is None or not self.waiting_for_request:
            return 0.0
        return self._loop.time() - self._idle_since


_OVERLOADED = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: " + PROBLEM_TYPE.encode()
    + b"\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
)


class ChatlogServer(web.Server):
    """aiohttp's server, making :class:`ChatlogRequestHandler` connections under a cap."""

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.max_connections = limits.effective_max_connections()
        self.evicted = 0
        self.refused = 0

    def __call__(self) -> RequestHandler:
        return ChatlogRequestHandler(
            self, loop=self._loop, header_timeout=self.limits.header_timeout, **self._kwargs
        )

    def admit(self, handler: ChatlogRequestHandler) -> None:
        """Keep the open connections under the cap: evict the longest idle, or refuse."""
        if len(self._connections) <= self.max_connections:
            return
        idle = [
            (c.idle_for, id(c), c) for c in self._connections
            if c is not handler and isinstance(c, ChatlogRequestHandler) and c.idle_for > 0
        ]
        if idle:
            oldest = max(idle)[2]
            oldest.force_close()
            self.evicted += 1
            WARNINGS.warning("evicted", "%d connections open (the cap): closed the longest "
                             "idle one to admit a new one", len(self._connections))
            return
        self.refused += 1
        WARNINGS.warning("refused", "%d connections open (the cap), none idle: refused a new "
                         "one with 503", len(self._connections))
        body = orjson.dumps({
            "type": "about:blank", "title": "Service unavailable", "status": 503,
            "detail": "too many open connections; retry shortly",
        })
        transport = handler.transport
        if transport is not None:
            transport.write(_OVERLOADED % len(body) + body)
        handler.force_close()


class ChatlogRunner(web.AppRunner):
    """An :class:`aiohttp.web.AppRunner` serving through :class:`ChatlogServer`."""

    def __init__(self, app: web.Application, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, keepalive_timeout=limits.keepalive_timeout, **kwargs)
        self.limits = limits

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # the app's startup runs here
        # The same handler, request factory and options aiohttp chose, on our server.
        return ChatlogServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=asyncio.get_running_loop(),
            limits=self.limits,
            **plain._kwargs,
        )


class AcceptErrors:
    """The loop's exception handler: accept() failures (out of file descriptors)
    are counted and logged once per ``interval``, not once per attempt with a
    traceback. Everything else goes to the previous handler."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float = 10.0) -> None:
        self.loop = loop
        self.interval = interval
        self.count = 0
        self._unlogged = 0
        self._last: float | None = None
        self._previous = loop.get_exception_handler()

    def install(self) -> None:
        self.loop.set_exception_handler(self)

    def uninstall(self) -> None:
        self.loop.set_exception_handler(self._previous)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if "socket.accept()" in message:
            self.count += 1
            self._unlogged += 1
            now = time.monotonic()
            if self._last is None or now - self._last >= self.interval:
                exc = context.get("exception")
                log.warning("cannot accept connections: %s (%d failed accepts since the "
                            "last report); raise the open-file limit or lower "
                            "CHATLOG_MAX_CONNECTIONS", exc or message, self._unlogged)
                self._last = now
                self._unlogged = 0
            return
        if self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)
