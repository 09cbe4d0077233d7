"""Blocking raw connections to one server, for the eventsourcing recorders' hot paths.

The recorders are blocking (the library calls them from many threads), and
each of their writes and reads is one command or one pipelined group. Through
redis-py's blocking client each command costs ~100 us of Python (a pool
checkout, the observability hooks, packing, a parse call per reply: a batch of
100 events written as MULTI/EXEC is 200+ replies). Here a pooled plain socket
sends what ``hiredis.pack_command`` packed and ``hiredis.Reader`` parses the
replies, with redis-py's error classes (``BaseParser.parse_error``), like the
store's lean connection does for the async paths.

Only for a plain (not TLS) single server reached as redis-py would reach it
(:meth:`WirePool.of` answers None otherwise: the callers keep redis-py). No
retries behind the caller's back: a connection that fails is closed, and the
error says so (a write may have been applied).
"""

from __future__ import annotations

import queue
import select
import socket
import threading
import weakref
from typing import Any

import hiredis
from redis import exceptions as rexc
from redis._parsers.base import BaseParser
from redis.connection import Connection, UnixDomainSocketConnection

from chatlog.eventstore.lean import hello_commands

__all__ = ["WireConnection", "WirePool"]

_pack: Any = hiredis.pack_command  # (its stub takes one-element tuples only)


class WireConnection:
    """One socket, its reply parser, and the redis-py ``Connection`` methods the
    recorders use (``send_packed_command``, ``read_response``, ...)."""

    __slots__ = ("__weakref__", "poller", "reader", "sock", "where")

    def __init__(self, sock: socket.socket, where: str) -> None:
        self.sock: socket.socket | None = sock
        # A pool dropped without close() (an application never closed): its sockets
        # close quietly, as redis-py's connections do. Not a __del__: when the pool is
        # collected in a reference cycle the collector may finalize the socket first,
        # and an unclosed socket's finalizer warns. A finalize callback runs before
        # any finalizer, and keeps the socket out of the cycle's garbage.
        weakref.finalize(self, sock.close)
        self.where = where
        self.reader = hiredis.Reader(replyError=BaseParser.parse_error)
        self.poller = select.poll()
        self.poller.register(sock, select.POLLIN)

    def pack_commands(self, commands: list[tuple[Any, ...]]) -> list[bytes]:
        return [b"".join([_pack(c) for c in commands])]

    def send_command(self, *args: Any) -> None:
        self.send_packed_command(_pack(args))

    def send_packed_command(self, data: bytes | list[bytes]) -> None:
        sock = self.sock
        if sock is None:
            raise rexc.ConnectionError(f"Connection to {self.where} is closed")
        try:
            sock.sendall(data if isinstance(data, bytes) else b"".join(data))
        except OSError as exc:
            self.disconnect()
            raise rexc.ConnectionError(f"Error while writing to {self.where}: {exc}") from exc

    def _next(self) -> Any:
        reader = self.reader
        reply = reader.gets()
        while reply is False:
            sock = self.sock
            if sock is None:
                raise rexc.ConnectionError(f"Connection to {self.where} is closed")
            try:
                data = sock.recv(65536)
            except TimeoutError as exc:
                self.disconnect()
                raise rexc.TimeoutError(f"Timeout reading from {self.where}") from exc
            except OSError as exc:
                self.disconnect()
                raise rexc.ConnectionError(f"Error while reading from {self.where}: {exc}") \
                    from exc
            if not data:
                self.disconnect()
                raise rexc.ConnectionError(f"Connection to {self.where} closed by server")
            reader.feed(data)
            reply = reader.gets()
        return reply

    def read_response(self) -> Any:
        """The next reply; an error reply is raised (as redis-py does)."""
        reply = self._next()
        if isinstance(reply, rexc.RedisError):
            raise reply
        return reply

    def read_responses(self, n: int) -> list[Any]:
        """The next ``n`` replies, error replies among them as exception objects.

        The replies already received are taken in one loop (a transaction's are
        hundreds, mostly ``QUEUED``: a call of :meth:`_next` each cost more than
        parsing them)."""
        gets = self.reader.gets
        out: list[Any] = []
        while len(out) < n:
            reply = gets()
            while reply is not False:
                out.append(reply)
                if len(out) == n:
                    return out
                reply = gets()
            out.append(self._next())
        return out

    def disconnect(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def idle_and_open(self) -> bool:
        """Open, with nothing to read (else the server closed it, or it is out of step)."""
        if self.sock is None:
            return False
        # (poll, not a peeking recv: that raised BlockingIOError on every checkout)
        if not self.poller.poll(0):  # nothing to read, no hang-up
            return True
        self.disconnect()
        return False


class WirePool:
    """Connections to one server, opened on demand and kept for reuse (thread-safe).

    At most ``size`` are open at once: a thread that finds them all in use waits
    (up to ``wait`` seconds) for one, as with redis-py's blocking pool, rather
    than failing or opening one per thread."""

    def __init__(self, *, path: str | None = None, host: str = "localhost", port: int = 6379,
                 db: int = 0, username: str | None = None, password: str | None = None,
                 timeout: float | None = None, connect_timeout: float | None = 10.0,
                 size: int = 64, wait: float = 30.0) -> None:
        self.path, self.host, self.port, self.db = path, host, port, db
        self.username, self.password = username, password
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self.where = f"unix:{path}" if path else f"{host}:{port}"
        self._wait = wait
        # the slots as tokens in a queue (C code: a threading.Semaphore's acquire and
        # release, in Python, were most of a checkout)
        self._slots: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(size):
            self._slots.put(None)
        self._idle: list[WireConnection] = []
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def of(cls, redis: Any) -> WirePool | None:
        """A pool reaching the server the redis-py client ``redis`` reaches, or None when
        it is anything but a plain TCP or unix socket connection (TLS, credential
        providers, RESP3)."""
        pool = getattr(redis, "connection_pool", None)
        if pool is None:
            return None
        kwargs: dict[str, Any] = pool.connection_kwargs
        if pool.connection_class not in (Connection, UnixDomainSocketConnection):
            return None
        if kwargs.get("credential_provider") is not None or kwargs.get("protocol") in (3, "3"):
            return None
        common: dict[str, Any] = {
            "db": int(kwargs.get("db") or 0), "username": kwargs.get("username"),
            "password": kwargs.get("password"), "timeout": kwargs.get("socket_timeout"),
            "connect_timeout": kwargs.get("socket_connect_timeout") or 10.0,
        }
        if pool.connection_class is UnixDomainSocketConnection:
            return cls(path=kwargs["path"], **common)
        return cls(host=kwargs.get("host") or "localhost", port=int(kwargs.get("port") or 6379),
                   **common)

    def get_connection(self) -> WireConnection:
        """A connection for the caller alone until it passes it to :meth:`release`."""
        try:
            self._slots.get(timeout=self._wait)
        except queue.Empty:
            raise rexc.ConnectionError(
                f"No connection to {self.where} free within {self._wait:g} s (all in use)"
            ) from None
        try:
            with self._lock:
                while self._idle:
                    conn = self._idle.pop()
                    if conn.idle_and_open():
                        return conn
            return self._open()
        except BaseException:
            self._slots.put(None)
            raise

    def release(self, conn: WireConnection) -> None:
        """Take back a connection from :meth:`get_connection` (once), kept if still open."""
        try:
            if conn.sock is None:
                return
            with self._lock:
                if not self._closed:
                    self._idle.append(conn)
                    return
            conn.disconnect()
        finally:
            self._slots.put(None)

    def close(self) -> None:
        """Close the idle connections; those in use close when released."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.disconnect()

    def _open(self) -> WireConnection:
        sock: socket.socket | None = None
        try:
            if self.path:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.connect_timeout)
                sock.connect(self.path)
            else:
                sock = socket.create_connection((self.host, self.port), self.connect_timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(self.timeout)
        except OSError as exc:
            if sock is not None:
                sock.close()
            raise rexc.ConnectionError(f"Error connecting to {self.where}: {exc}") from exc
        conn = WireConnection(sock, self.where)
        hello = hello_commands(self.username, self.password, self.db)
        if hello:
            try:
                conn.send_packed_command(conn.pack_commands(hello))
                for reply in conn.read_responses(len(hello)):
                    if isinstance(reply, BaseException):
                        raise reply
            except BaseException:
                conn.disconnect()
                raise
        return conn
