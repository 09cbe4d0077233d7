"""Talking to Redis: the errors that mean "not there", the guard, connect options,
and small helpers for the replies stream commands give.

Every module of the event store (and its users, such as the job workers)
takes these from here, so there is one list of "unavailable" errors and one
way of turning them into :class:`~chatlog.errors.StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable
from typing import Any, TypeAlias, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from chatlog.errors import ConfigError, StoreUnavailable

T = TypeVar("T")

#: A client for one server or for a cluster (``redis+cluster://``).
Client: TypeAlias = aioredis.Redis | RedisCluster

#: Cluster errors that mean "not reachable right now" (a failover, a node down).
CLUSTER_UNAVAILABLE: tuple[type[BaseException], ...] = (
    rexc.ClusterDownError,
    rexc.ClusterError,
    rexc.TryAgainError,
    rexc.RedisClusterException,  # "cannot be connected", "slots not covered" while electing
)

#: Errors that mean "Redis is not there right now"; nothing was written.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    rexc.ConnectionError,
    rexc.TimeoutError,
    rexc.BusyLoadingError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
    *CLUSTER_UNAVAILABLE,
)


def unavailable(exc: BaseException) -> StoreUnavailable:
    """The :class:`StoreUnavailable` to raise (``from exc``) for one of :data:`UNAVAILABLE`."""
    err = StoreUnavailable(f"event store unavailable: {exc.__class__.__name__}: {exc}")
    err.__cause__ = exc
    return err


def as_raised(reply: BaseException) -> BaseException:
    """An error reply (a value, not raised yet) as the store raises it: one of
    :data:`UNAVAILABLE` (``-LOADING`` while the server loads its AOF, say) as
    :class:`StoreUnavailable`, any other as it is."""
    return unavailable(reply) if isinstance(reply, UNAVAILABLE) else reply


#: Errors with which the server refused a command without running it.
_REFUSED: tuple[type[BaseException], ...] = (
    rexc.BusyLoadingError, rexc.ClusterDownError, rexc.TryAgainError,
    ConnectionRefusedError, FileNotFoundError,
)


def never_sent(exc: BaseException | None) -> bool:
    """True when ``exc`` shows a command was not run: it failed while connecting (the
    command was never written), or the server refused it. Any other failure (a read
    that timed out, a connection lost while waiting for the reply) leaves it unknown
    whether the server ran it."""
    if exc is None:
        return True
    if isinstance(exc, _REFUSED):
        return True
    text_ = str(exc)
    return "connecting to" in text_ or "cannot be connected" in text_


async def guard(call: Awaitable[T]) -> T:
    """Await a Redis call, turning connection trouble into :class:`StoreUnavailable`.

    A cancellation that redis-py swallowed (the call returned normally) is
    raised again: a caller polling in a loop would otherwise never stop (seen:
    a lag sampler that ran on after its task was cancelled).
    """
    try:
        result = await call
    except UNAVAILABLE as exc:
        raise unavailable(exc) from exc
    raise_if_cancelled()
    return result


def raise_if_cancelled() -> None:
    """Raise ``CancelledError`` if the current task was asked to stop.

    redis-py may finish a command whose task was cancelled and return its reply
    as if nothing happened (it protects the connection from a half-read reply);
    the cancel request is then only visible as ``Task.cancelling()``, and a
    retry loop that never checks it runs on forever.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def client_options(*, blocking: bool = False) -> dict[str, Any]:
    """The options of every client the store makes: no retries behind our back.

    Appends are not blindly retried (an unacknowledged append may or may not
    have landed; the caller decides, with its event id). ``blocking`` clients
    serve XREAD BLOCK and get no socket timeout shorter than their blocks.
    """
    return {
        "decode_responses": False,
        "retry": Retry(NoBackoff(), 0),
        "socket_timeout": None if blocking else 10.0,
        "socket_connect_timeout": 2.0,
        "health_check_interval": 0,
    }


#: The Redis URL's ``?options=`` that are seconds: positive and finite, or redis-py
#: and the lean connections would each read them their own way (0 is "none" to one
#: and "at once" to the other; nan never fires; a negative one fails every command).
_SECONDS_OPTIONS = ("socket_timeout", "socket_connect_timeout")
#: The longest such timeout (~11.6 days): a blocking socket's timeout must fit the
#: platform's time_t in nanoseconds (1e12 s was an OverflowError at the first connect).
_MAX_SECONDS = 1e6


def checked_url(url: str, *, blocking: bool = False) -> str:
    """``url`` once its timeouts are known good (else :class:`ConfigError`, without the
    URL: it may hold a password); for a ``blocking`` client without ``socket_timeout``
    (the reply timeout: never for ``XREAD BLOCK``)."""
    try:
        parts = urlsplit(url)  # (a cluster URL's netloc holds several host:port pairs)
    except ValueError as exc:
        raise ConfigError(f"invalid Redis URL: {exc}") from None
    options = parse_qsl(parts.query, keep_blank_values=True)
    for name, given in options:
        if name in _SECONDS_OPTIONS and given:  # (redis-py skips an empty one)
            try:
                seconds = float(given)
            except ValueError:
                seconds = math.nan
            if not (math.isfinite(seconds) and 0 < seconds <= _MAX_SECONDS):
                raise ConfigError(f"invalid Redis URL: {name} must be a positive number of "
                                  f"seconds up to {_MAX_SECONDS:.0f}, not {given!r}")
    if not blocking or not any(name == "socket_timeout" for name, _ in options):
        return url
    kept = [o for o in parts.query.split("&") if unquote(o.split("=", 1)[0]) != "socket_timeout"]
    return urlunsplit(parts._replace(query="&".join(kept)))


def text(value: object, default: str = "") -> str:
    """A reply value as ``str``: bytes decoded, ``None`` as ``default``, others by ``str()``."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, str):
        return value
    if value is None:
        return default
    if isinstance(value, bytearray | memoryview):
        return bytes(value).decode()
    return str(value)


def stream_items(reply: Any) -> list[tuple[Any, list[Any]]]:
    """``[(stream key, entries)]`` of an XREAD / XREADGROUP reply.

    They come as a list (RESP2) or a dict (RESP3); no reply (a block that
    timed out) is an empty list.
    """
    if not reply:
        return []
    if isinstance(reply, dict):
        return [(k, v[0] if v and isinstance(v[0], list) else v) for k, v in reply.items()]
    return [(k, v) for k, v in reply]

