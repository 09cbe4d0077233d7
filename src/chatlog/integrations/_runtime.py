"""What both integrations need: open the log from a URL or a data dir, run a loop on a thread.

Their records are ordinary log events: :func:`event_body` builds an entry's
body exactly as the store's append does (``codec.encode_body``), so replay,
archive and migrate carry them. Their scripts add entries with the fields
the store writes (``i t a v b``) and keep the aggregate's index and version
as the store's append does, plus their own index keys, all under the
partition's hash tag (one slot, also on a cluster).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from redis import BlockingConnectionPool, Redis
from redis.cluster import ClusterNode, RedisCluster

from chatlog.events import AggregateType, EventData, NewEvent
from chatlog.eventstore.cluster import CLUSTER_SCHEMES
from chatlog.eventstore.codec import encode_body
from chatlog.eventstore.embedded import EmbeddedValkey
from chatlog.eventstore.owner import DataDirLock, stop_orphan
from chatlog.eventstore.runtime import open_store
from chatlog.eventstore.store import EventStore
from chatlog.identity import ProjectKey, normalize_project_id
from chatlog.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

URL_SCHEMES = ("redis://", "rediss://", "unix://", "redis+cluster://", "valkey://")

#: Lua: append one entry as the store's append does (fields, version, aggregate index).
#: KEYS: log, versions, aggregate index; ARGV: id, type, aggregate, body. Leaves ``pos``.
LUA_ADD_ENTRY = """
local function add_entry(log, versions, index, id, type, aggregate, body)
  local v = redis.call('HINCRBY', versions, aggregate, 1)
  local pos = redis.call('XADD', log, '*', 'i', id, 't', type, 'a', aggregate,
                         'v', tostring(v), 'b', body)
  redis.call('RPUSH', index, pos)
  redis.call('XADD', string.sub(log, 1, -4) .. 'pidx:' .. string.match(aggregate, '^[^/]*'),
             pos, 'e', '')
  return pos
end
local function xdel_all(log, ids)
  for i = 1, #ids, 500 do
    redis.call('XDEL', log, unpack(ids, i, math.min(i + 499, #ids)))
  end
end
"""


def digest(text: str) -> str:
    """A short stable name for arbitrary text inside a key (SHA-1 hex, as Lua's sha1hex)."""
    return hashlib.sha1(text.encode()).hexdigest()


def is_url(target: str | Path) -> bool:
    return isinstance(target, str) and target.startswith(URL_SCHEMES)


def settings_for(target: str | Path, key_prefix: str | None = None) -> Settings:
    """Settings for a Redis/Valkey URL or a chatlog data dir (the rest from CHATLOG_*)."""
    values: dict[str, Any] = {}
    if is_url(target):
        values["redis_url"] = str(target)
    else:
        values["data_dir"] = Path(target)
        values["redis_url"] = None
    if key_prefix is not None:
        values["key_prefix"] = key_prefix
    return Settings(**values)


class _Embedded:
    """Embedded servers this process started, by data dir, with how many logs use each:
    several savers or factories (an application and its projection, say) share one,
    and it stops when the last of them closes, not when the first does."""

    _lock = threading.Lock()
    _servers: dict[Path, tuple[EmbeddedValkey, int, DataDirLock]] = {}

    @classmethod
    def acquire(cls, settings: Settings) -> str | None:
        """The URL to use for ``settings``' data dir; None when another process owns the
        data dir (``chatlog serve``): open_store joins its Valkey, or says why it cannot.

        Like ``serve``, this process takes the data dir's lock while its server runs
        (one owner per data dir), so nobody mistakes that server for an orphan."""
        key = settings.valkey_dir.resolve()
        with cls._lock:
            held = cls._servers.get(key)
            if held is not None:
                cls._servers[key] = (held[0], held[1] + 1, held[2])
                return held[0].url
            lock = DataDirLock(settings.data_dir)
            if lock.acquire("library") is not None:
                return None
            try:
                stop_orphan(settings.valkey_dir)
                candidate = EmbeddedValkey(settings.valkey_dir)
                candidate.start()
            except BaseException:
                lock.release()
                raise
            lock.record(valkey_url=candidate.url, valkey_pid=candidate.pid)
            cls._servers[key] = (candidate, 1, lock)
            return candidate.url

    @classmethod
    def release(cls, settings: Settings) -> None:
        key = settings.valkey_dir.resolve()
        with cls._lock:
            held = cls._servers.get(key)
            if held is None:
                return
            if held[1] > 1:
                cls._servers[key] = (held[0], held[1] - 1, held[2])
                return
            del cls._servers[key]
        try:
            held[0].stop()
        finally:
            held[2].release()


@contextlib.asynccontextmanager
async def open_log(
    target: str | Path, *, key_prefix: str | None = None
) -> AsyncIterator[tuple[EventStore, Settings]]:
    """The log at a URL, or under a data dir (joining a running ``chatlog serve``'s Valkey,
    or the embedded one, started while any log of this process uses it)."""
    settings = settings_for(target, key_prefix)
    if is_url(target):
        async with open_store(settings) as opened:
            yield opened.store, settings
        return
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = await asyncio.to_thread(_Embedded.acquire, settings)
    try:
        joined = settings.model_copy(update={"redis_url": url}) if url else settings
        async with open_store(joined) as opened:
            yield opened.store, settings
    finally:
        if url is not None:
            if _closing_at_exit:  # executors take no new work then: stop it here
                _Embedded.release(settings)
            else:
                await asyncio.to_thread(_Embedded.release, settings)


def project_key(project: str | None, settings: Settings) -> ProjectKey:
    return normalize_project_id(project, settings.project_namespace)


def event_body(
    project: ProjectKey, aggregate_type: AggregateType, aggregate_id: str, data: EventData,
    blob: bytes | None,
) -> tuple[str, str, str, bytes]:
    """(event id, type, aggregate key, body) of a new event, encoded as the store encodes it."""
    event = NewEvent.of(
        data, project=project.key, project_name=project.display,
        aggregate_type=aggregate_type, aggregate_id=aggregate_id, blob=blob,
    )
    return str(event.id), event.type, event.aggregate, encode_body(event)


#: What is still open when the interpreter exits (see :func:`close_at_exit`).
_to_close: weakref.WeakSet[Any] = weakref.WeakSet()
_loops: weakref.WeakSet[LoopThread] = weakref.WeakSet()
_closing_at_exit = False  # the interpreter is exiting: what is open is being closed
_exiting = False  # ... and has been: no loop thread is waited for any more


def close_at_exit(closable: Any) -> None:
    """Call ``closable.close()`` at interpreter exit if it is still alive then.

    Its loop thread is a daemon: once the interpreter finalizes it runs no more,
    and a close that waits for it (an ``eventsourcing`` application dropped
    without ``close()``, closed by its ``__del__`` at exit) would wait forever.
    At exit the threads still run, so it is closed then, properly."""
    _to_close.add(closable)


@atexit.register
def _close_all_at_exit() -> None:
    global _closing_at_exit, _exiting
    _closing_at_exit = True
    for closable in list(_to_close):
        try:
            closable.close()
        except Exception:  # (a server gone already, say): exit all the same
            log.debug("closing %r at exit failed", closable, exc_info=True)
    _exiting = True  # from here on no loop thread is waited for
    for runner in list(_loops):
        runner.stop()


class LoopThread:
    """An event loop on a daemon thread, for blocking callers of async code."""

    def __init__(self, name: str = "chatlog-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._close_after = False
        self._closing: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        _loops.add(self)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        if self._close_after:
            self.loop.close()

    def close_later(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` on the loop, then stop and close the loop; without waiting
        (for a finalizer: it may run on any thread, the loop's own included)."""
        async def then_stop() -> None:
            try:
                await coro
            except Exception:
                log.debug("closing a dropped %s failed", self._thread.name, exc_info=True)
            finally:  # after the callbacks the close scheduled (a transport's last one
                self.loop.call_soon(self.loop.stop)  # closes its socket)

        def start() -> None:
            self._closing = self.loop.create_task(then_stop())  # (a task needs a holder)

        self._close_after = True
        try:
            self.loop.call_soon_threadsafe(start)
        except RuntimeError:  # the loop is closed already
            coro.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result (never call it from the loop).

        Once the interpreter is exiting (after its ``atexit`` calls) the loop's
        daemon thread may never run again: then RuntimeError at once, not a wait
        forever."""
        if _exiting or self.loop.is_closed():
            coro.close()
            raise RuntimeError(f"{self._thread.name}: its loop has stopped (the "
                               "interpreter is exiting, or it was closed)")
        return self.submit(coro).result()

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def run_blocking(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], what: str) -> T:
    """Run ``coro`` on ``loop`` from another thread and wait; on ``loop``'s own thread
    raise instead (waiting there would deadlock)."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()
        raise RuntimeError(
            f"{what} is a blocking call made on the event loop the saver runs on, where it "
            "would wait for itself forever; await its async form instead, or call it "
            "from another thread"
        )
    if loop.is_closed() or not loop.is_running():
        coro.close()
        raise RuntimeError(f"{what}: the saver's event loop is not running (was it closed?)")
    return asyncio.run_coroutine_threadsafe(coro, loop).result()


def sync_client(url: str) -> Any:
    """A blocking client for ``url`` whose pool makes callers wait for a connection
    (up to 30 s) instead of failing when many threads call at once."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() in CLUSTER_SCHEMES:
        nodes = []
        for seed in rest.rsplit("@", 1)[-1].split("/", 1)[0].split(","):
            host, _, port = seed.strip().rpartition(":")
            nodes.append(ClusterNode(host.strip("[]"), int(port)))  # type: ignore[no-untyped-call]
        return RedisCluster(startup_nodes=nodes, decode_responses=False, max_connections=256)
    pool = BlockingConnectionPool.from_url(url, max_connections=64, timeout=30)
    client = Redis(connection_pool=pool)
    # close() closes the pool's sockets too (a client given its pool leaves them open)
    client.auto_close_connection_pool = True
    return client
