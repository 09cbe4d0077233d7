"""A lean connection to one Redis or Valkey server, for the store's hot paths.

redis-py's asyncio client costs ~150 us of Python per command (a pool
checkout, a lock, a stream reader, per-command futures and callbacks). Here
one asyncio ``Protocol`` owns one socket: each command is packed by
``hiredis.pack_command`` and written at once, so commands issued concurrently
go out back to back (natural pipelining); ``hiredis.Reader`` parses the
replies, which are matched to the waiting futures in FIFO order.

Behaviour kept exactly like the redis-py clients it stands beside:

- errors are redis-py's classes (replies parsed by redis-py's own
  ``parse_error``: ``NoScriptError``, ``BusyLoadingError``, ...), so
  :data:`~chatlog.eventstore.connection.UNAVAILABLE` and ``guard`` apply
  unchanged;
- a failure to connect says "Error connecting to ..." (nothing was sent);
  a connection lost or timed out with commands in flight fails each of them
  with :class:`ReplyLost` / :class:`ReplyTimeout`, which say the command may
  have been applied (the unknown-outcome rule);
- no retries behind the caller's back; the next command after a failure
  opens a new connection;
- ``timeout``: seconds without any reply while commands wait (redis-py's
  socket timeout); None for connections that serve ``XREAD BLOCK``.

A caller cancelled while waiting leaves the connection usable: its reply is
still read, in order, and dropped.
"""

from __future__ import annotations

import asyncio
import collections
import select
import socket
import threading
from typing import Any, cast
from urllib.parse import unquote, urlparse

import hiredis
from redis import exceptions as rexc
from redis._parsers.base import BaseParser

__all__ = ["LeanConnection", "LeanPool", "ReplyLost", "ReplyTimeout", "address_of_pool",
           "hello_commands"]

#: How often the reply watchdog looks per ``timeout``.
_LOOKS = 4


class ReplyLost(rexc.ConnectionError):
    """The connection closed while this command waited for its reply: it may have
    been applied."""


class ReplyTimeout(rexc.TimeoutError):
    """No reply within the timeout: the command may have been applied (the
    connection is closed, as its replies can no longer be matched)."""


class _Group:
    """Several commands written together; one future for all their replies."""

    __slots__ = ("future", "n", "replies")

    def __init__(self, future: asyncio.Future[list[Any]], n: int) -> None:
        self.future = future
        self.n = n
        self.replies: list[Any] = []


class _Protocol(asyncio.Protocol):
    __slots__ = ("closed", "conn", "idle_poll", "loop", "pending", "reader", "sock", "thread",
                 "transport")

    def __init__(self, conn: LeanConnection, sock: socket.socket,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.conn = conn
        self.sock = sock
        #: Its loop, kept: ``asyncio.get_running_loop()`` costs a ``getpid`` system call
        #: (CPython 3.11 checks the loop's process), once per command.
        self.loop = loop
        self.thread = threading.get_ident()  # the loop's (this runs on it)
        self.reader = hiredis.Reader(replyError=BaseParser.parse_error)
        self.pending: collections.deque[Any] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        #: Whether the idle socket has anything to read (data, EOF or an error): a poll
        #: of no time, not a peeking ``recv``, which raised (2.5 us) when it had not.
        self.idle_poll = select.poll()
        self.idle_poll.register(sock.fileno(), select.POLLIN)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's are not subclasses of asyncio.Transport).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        pending = self.pending
        self.conn._progress = True
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self.fail(rexc.ConnectionError(f"protocol error: {exc}"))
                return
            if reply is False:
                return
            if not pending:  # a reply nobody asked for: the stream is out of step
                self.fail(rexc.ConnectionError("unexpected reply from the server"))
                return
            head = pending[0]
            if type(head) is _Group:
                head.replies.append(reply)
                if len(head.replies) < head.n:
                    continue
                pending.popleft()
                if not head.future.done():
                    head.future.set_result(head.replies)
                continue
            pending.popleft()
            if not head.done():
                if isinstance(reply, rexc.RedisError):
                    head.set_exception(reply)
                else:
                    head.set_result(reply)

    def usable(self) -> bool:
        """Open, and, when idle, not closed by the server behind our back.

        An idle connection has nothing to read; if it has (the EOF of a server
        that went away, not yet seen by the event loop), it is closed here, and
        the command goes over a new one instead of failing as "may have been
        applied". One poll of no time, no turn of the event loop. A
        RuntimeError, before anything is sent, when the caller runs another loop.
        """
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            return False
        if not self.loop.is_running() or self.thread != threading.get_ident():
            # The caller runs another loop: its reply would come to a future that loop
            # cannot await, or be read by no loop at all. (Cheaper than comparing with
            # asyncio.get_running_loop(), a getpid system call.)
            raise RuntimeError(
                f"the connection to {self.conn.where} was opened on another event loop; "
                "nothing was sent (a store serves the loop it was opened on: open one per "
                "loop, or run the call on the store's loop, e.g. with "
                "asyncio.run_coroutine_threadsafe)")
        if self.pending or not self.idle_poll.poll(0):
            return True
        self.fail(ReplyLost(f"Connection to {self.conn.where} closed while idle"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f": {exc}" if exc else ""
        self.fail(ReplyLost(
            f"Connection to {self.conn.where} lost while waiting for the reply{reason} "
            "(the command may have been applied)"))

    def fail(self, exc: BaseException) -> None:
        """Close; every command still waiting fails with ``exc``."""
        self.closed = True
        if self.conn._proto is self:
            self.conn._proto = None
        pending, self.pending = self.pending, collections.deque()
        for item in pending:
            future = item.future if type(item) is _Group else item
            if not future.done():
                future.set_exception(exc)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class LeanConnection:
    """One connection (opened on first use, reopened after a failure)."""

    def __init__(
        self,
        *,
        path: str | None = None,
        host: str = "localhost",
        port: int = 6379,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        timeout: float | None = 10.0,
        connect_timeout: float = 2.0,
    ) -> None:
        self.path = path
        self.host = host
        self.port = port
        self.db = db
        self.username = username
        self.password = password
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.where = f"unix:{path}" if path else f"{host}:{port}"
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._progress = False  # a reply arrived since the watchdog last looked
        self._quiet = 0  # the watchdog's looks in a row that saw no reply
        self._watchdog: asyncio.TimerHandle | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> LeanConnection:
        """``redis://[user:password@]host[:port][/db]`` or ``unix://path[?db=N]``."""
        u = urlparse(url)
        password = unquote(u.password) if u.password else None
        username = unquote(u.username) if u.username else None
        if u.scheme == "unix":
            query = dict(p.split("=", 1) for p in u.query.split("&") if "=" in p)
            return cls(path=u.path, db=int(query.get("db", 0)), username=username,
                       password=password, **options)
        if u.scheme != "redis":
            raise ValueError(f"a lean connection takes redis:// or unix:// URLs, not {url!r}")
        db = int(u.path.strip("/") or 0)
        return cls(host=u.hostname or "localhost", port=u.port or 6379, db=db,
                   username=username, password=password, **options)

    @property
    def connected(self) -> bool:
        return self._proto is not None and not self._proto.closed

    @property
    def in_flight(self) -> int:
        """Commands (or groups) written and not answered yet."""
        return len(self._proto.pending) if self._proto is not None else 0

    # -- commands ------------------------------------------------------------

    async def execute(self, *args: Any) -> Any:
        """Send one command; its reply (a ``ResponseError`` reply is raised)."""
        proto = self._proto
        if proto is None or not proto.usable():
            proto = await self._connect()
        return await self._send(proto, args)

    def _send(self, proto: _Protocol, command: tuple[Any, ...]) -> asyncio.Future[Any]:
        """Write ``command``; the future of its reply."""
        assert proto.transport is not None
        future: asyncio.Future[Any] = proto.loop.create_future()
        proto.transport.write(hiredis.pack_command(command))
        proto.pending.append(future)
        if self.timeout is not None and self._watchdog is None:
            self._quiet = 0
            self._arm()
        return future

    async def execute_many(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send commands in one write (nothing else goes between them, so a
        MULTI ... EXEC stays whole); their replies, errors as exception values."""
        proto = self._proto
        if proto is None or not proto.usable():
            proto = await self._connect()
        assert proto.transport is not None
        future: asyncio.Future[list[Any]] = proto.loop.create_future()
        proto.transport.write(b"".join([hiredis.pack_command(c) for c in commands]))
        proto.pending.append(_Group(future, len(commands)))
        if self.timeout is not None and self._watchdog is None:
            self._quiet = 0
            self._arm()
        return await future

    async def evalsha(self, sha: str, script: str, keys: list[Any], args: list[Any]) -> Any:
        """EVALSHA; on NOSCRIPT (the server forgot it, nothing ran) load it and run again."""
        proto = self._proto  # as execute(), without a coroutine of its own (the hot path)
        if proto is None or not proto.usable():
            proto = await self._connect()
        try:
            return await self._send(proto, ("EVALSHA", sha, len(keys), *keys, *args))
        except rexc.NoScriptError:
            await self.execute("SCRIPT", "LOAD", script)
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)

    async def close(self) -> None:
        """Close the connection; commands still waiting fail with :class:`ReplyLost`."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        connecting, self._connecting = self._connecting, None
        if connecting is not None and not connecting.done():
            connecting.cancel()  # its socket is closed, not left to the garbage collector
            await asyncio.wait([connecting])
        proto, self._proto = self._proto, None
        if proto is not None and not proto.closed:
            proto.connection_lost(None)

    # -- internals -----------------------------------------------------------

    def _arm(self) -> None:
        assert self.timeout is not None
        self._progress = False
        self._watchdog = asyncio.get_running_loop().call_later(self.timeout / _LOOKS,
                                                               self._check)

    def _check(self) -> None:
        """Every ``timeout / _LOOKS`` s while commands wait: no reply at all in
        ``_LOOKS`` looks in a row (``timeout`` s, give or take one look) means the
        server stopped answering. (Looking once per ``timeout`` gave up only after
        up to twice it: the replies just before a stall counted for the first look.)"""
        self._watchdog = None
        proto = self._proto
        if proto is None or proto.closed or not proto.pending:
            return
        self._quiet = 0 if self._progress else self._quiet + 1
        if self._quiet >= _LOOKS:
            proto.fail(ReplyTimeout(
                f"Timeout reading from {self.where}: no reply in {self.timeout:g} s "
                "(the command may have been applied)"))
            return
        self._arm()

    async def _connect(self) -> _Protocol:
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._open())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if connecting.cancelled() and task is not None and not task.cancelling():
                raise rexc.ConnectionError(
                    f"Connection to {self.where} closed while connecting") from None
            raise
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        sock: socket.socket | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.path:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    address: Any = self.path
                else:
                    family, kind, number, _, address = (await loop.getaddrinfo(
                        self.host, self.port, type=socket.SOCK_STREAM))[0]
                    sock = socket.socket(family, kind, number)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setblocking(False)
                await loop.sock_connect(sock, address)
                made = sock

                def factory() -> _Protocol:
                    return _Protocol(self, made, loop)

                if self.path:
                    _, proto = await loop.create_unix_connection(factory, sock=sock)
                else:
                    _, proto = await loop.create_connection(factory, sock=sock)
        except BaseException as exc:  # (a cancellation too: by close())
            if sock is not None:
                sock.close()
            if isinstance(exc, TimeoutError):
                raise rexc.TimeoutError(f"Timeout connecting to {self.where}") from exc
            if isinstance(exc, OSError):
                raise rexc.ConnectionError(f"Error connecting to {self.where}: {exc}") from exc
            raise
        self._proto = proto
        hello = hello_commands(self.username, self.password, self.db)
        if hello:
            try:
                replies = await self.execute_many(hello)
            except rexc.ConnectionError as exc:
                raise rexc.ConnectionError(f"Error connecting to {self.where}: {exc}") from exc
            except BaseException:
                proto.fail(rexc.ConnectionError(f"Connection to {self.where} closed"))
                raise
            for reply in replies:
                if isinstance(reply, BaseException):
                    proto.fail(rexc.ConnectionError(f"Error connecting to {self.where}"))
                    raise reply
        return proto


def hello_commands(username: str | None, password: str | None,
                   db: int) -> list[tuple[Any, ...]]:
    """What a new connection sends before its first command: AUTH and SELECT, as needed."""
    hello: list[tuple[Any, ...]] = []
    if password is not None:
        hello.append(("AUTH", username, password) if username else ("AUTH", password))
    if db:
        hello.append(("SELECT", db))
    return hello


def address_of_pool(pool: Any, *, blocking: bool = False) -> LeanConnection | None:
    """A lean connection to where a redis-py pool connects (None for TLS and others).

    Its reply timeout is the pool's ``socket_timeout`` (10 s, or the Redis URL's
    ``?socket_timeout=``); none for a ``blocking`` one (it serves ``XREAD BLOCK``).
    """
    from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection

    kw = pool.connection_kwargs
    options: dict[str, Any] = {
        "db": int(kw.get("db") or 0),
        "username": kw.get("username"),
        "password": kw.get("password"),
        "connect_timeout": float(kw.get("socket_connect_timeout") or 2.0),
        "timeout": None if blocking else float(kw.get("socket_timeout") or 10.0),
    }
    cls = pool.connection_class
    if issubclass(cls, UnixDomainSocketConnection):
        return LeanConnection(path=kw["path"], **options)
    if issubclass(cls, SSLConnection) or not issubclass(cls, Connection):
        return None
    return LeanConnection(host=kw.get("host", "localhost"), port=int(kw.get("port", 6379)),
                          **options)


class LeanPool:
    """Lean connections for blocking commands (``XREAD BLOCK`` holds its connection
    until it returns): one per concurrent caller, idle ones kept for reuse."""

    def __init__(self, template: LeanConnection, keep: int = 8) -> None:
        self._template = template
        self._idle: list[LeanConnection] = []
        self._keep = keep
        self._all: set[LeanConnection] = set()

    def acquire(self) -> LeanConnection:
        while self._idle:
            conn = self._idle.pop()
            if conn.connected:
                return conn
            self._all.discard(conn)
        t = self._template
        conn = LeanConnection(path=t.path, host=t.host, port=t.port, db=t.db,
                              username=t.username, password=t.password, timeout=t.timeout,
                              connect_timeout=t.connect_timeout)
        self._all.add(conn)
        return conn

    async def release(self, conn: LeanConnection) -> None:
        """Back to the pool when it is idle and open (else closed: a cancelled
        blocking command's reply would hold up the next user)."""
        if conn.connected and conn.in_flight == 0 and len(self._idle) < self._keep:
            self._idle.append(conn)
            return
        self._all.discard(conn)
        await conn.close()

    async def close(self) -> None:
        conns, self._all, self._idle = self._all, set(), []
        for conn in conns:
            await conn.close()
