"""Talking to Redis: the errors that mean "not there", the guard, connect options,
and small helpers for the replies stream commands give.

Every module of the event store (and its users, such as the job workers)
takes these from here, so there is one list of "unavailable" errors and one
way of turning them into :class:`~chatlog.errors.StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeAlias, TypeVar

import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from chatlog.errors import StoreUnavailable

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
    return StoreUnavailable(f"event store unavailable: {exc.__class__.__name__}: {exc}")


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

