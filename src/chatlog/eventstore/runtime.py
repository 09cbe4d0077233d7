"""Open the log a :class:`~chatlog.settings.Settings` describes.

With ``redis_url`` set, connect to it. Without, the log is the embedded Valkey
under the data dir, and the data dir has one owner (:mod:`.owner`):

* ``chatlog serve`` owns it (:func:`own_data_dir`): it takes the lock, stops a
  Valkey a killed run left behind, starts its own and supervises it
  (:class:`ValkeySupervisor`).
* A CLI command (:func:`open_store`) uses the running owner's Valkey when
  there is one. When there is none, a command that may run without a server
  takes the lock itself and starts a private Valkey for as long as it runs;
  any other command says that no server runs.

Nothing here creates a data dir except ``serve``: a command run where there
is no chatlog data says so instead of starting an empty log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from chatlog.errors import DataDirError, EmbeddedServerError, cannot_use_dir
from chatlog.eventstore.embedded import EmbeddedValkey
from chatlog.eventstore.owner import DataDirLock, Owner, read_owner, stop_orphan
from chatlog.eventstore.store import EventStore
from chatlog.settings import Settings

if TYPE_CHECKING:
    from chatlog.eventstore.archive import Archive

log = logging.getLogger(__name__)
#: What a command should tell its user (the CLI prints it on stderr; silent otherwise).
notice = logging.getLogger("chatlog.notice")


@dataclass
class OpenedStore:
    store: EventStore
    url: str
    embedded: EmbeddedValkey | None
    #: The data dir's owner whose Valkey this store uses (None: an external URL).
    owner: Owner | None = None
    #: True when this process started the Valkey just for this command.
    private: bool = False
    #: Set when an orphaned Valkey of a killed run was stopped first (its pid).
    orphan_stopped: int | None = field(default=None)


def no_data_here(settings: Settings) -> DataDirError:
    return DataDirError(
        f"no chatlog data here ({settings.data_dir}): set CHATLOG_DATA_DIR or --data-dir "
        "(or run `chatlog serve` to create it)"
    )


def has_data(settings: Settings) -> bool:
    """True when the data dir holds a chatlog log (its embedded Valkey's directory)."""
    return settings.valkey_dir.is_dir()


async def _connect(settings: Settings, url: str) -> EventStore:
    return await EventStore.open(
        url,
        partitions=settings.partitions,
        prefix=settings.key_prefix,
        idempotency_window=settings.idempotency_window,
        outcome_window=settings.outcome_window,
        outcome_timeout=settings.outcome_timeout,
        ack=settings.ack,
        ack_replicas=settings.ack_replicas,
        ack_timeout=settings.ack_timeout,
        ack_fsync=settings.ack_fsync,
        archive=open_archive(settings),
    )


def open_archive(settings: Settings) -> Archive | str:
    """The archive tier ``settings`` name, read with Redis as one log:
    ``CHATLOG_ARCHIVE_URL`` when set, else ``<data dir>/archive``, which the store
    opens once the archiver has created it."""
    if settings.archive_url is None:
        return settings.archive_location
    from chatlog.eventstore.archive import Archive

    return Archive.open(settings.archive_url)


async def _start_embedded(embedded: EmbeddedValkey) -> None:
    # Spawned from this (the main) thread, so the server dies with this process.
    embedded.spawn()
    try:
        await asyncio.to_thread(embedded.wait_ready)
    except BaseException:
        await asyncio.to_thread(embedded.stop)
        raise


@dataclass
class Ownership:
    """This process owns the data dir: its lock, and the Valkey it started."""

    lock: DataDirLock
    #: The embedded Valkey this process started (None: the log is at ``url``).
    embedded: EmbeddedValkey | None
    url: str
    orphan_stopped: int | None = None


@contextlib.asynccontextmanager
async def own_data_dir(settings: Settings, command: str, *,
                       create: bool = False) -> AsyncIterator[Ownership]:
    """Take the data dir's lock and start its embedded Valkey; undo both on exit.

    With ``settings.redis_url`` set, only the lock is taken (the read models
    under the data dir still have one owner). Raises :class:`DataDirError`
    naming the owner when another process owns it.
    """
    try:
        if create:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        elif not has_data(settings):
            raise no_data_here(settings)
        lock = DataDirLock(settings.data_dir)
        other = lock.acquire(command)
    except OSError as exc:
        raise DataDirError(cannot_use_dir(settings.data_dir, "the data dir", exc)) from None
    if other is not None:
        raise DataDirError(
            f"data dir {settings.data_dir} is owned by {other.describe()}; stop it first, "
            "or use another --data-dir"
        )
    try:
        if settings.redis_url is not None:
            lock.record(valkey_url=settings.redis_url)
            yield Ownership(lock, None, settings.redis_url)
            return
        orphan = await asyncio.to_thread(stop_orphan, settings.valkey_dir)
        if orphan is not None:
            log.warning("stopped Valkey pid %s, left running on %s by a killed chatlog",
                        orphan, settings.valkey_dir)
        embedded = EmbeddedValkey(settings.valkey_dir)
        await _start_embedded(embedded)
        assert embedded.pid is not None
        try:
            lock.record(valkey_url=embedded.url, valkey_pid=embedded.pid)
            yield Ownership(lock, embedded, embedded.url, orphan)
        finally:
            await asyncio.to_thread(embedded.stop)
    finally:
        lock.release()


@contextlib.asynccontextmanager
async def open_store(settings: Settings, command: str = "cli", *, private: bool = True,
                     url: str | None = None) -> AsyncIterator[OpenedStore]:
    """The event store for ``settings``, closed (and a private Valkey stopped) on exit.

    ``private=False``: the command needs a running ``chatlog serve`` (or a
    Redis URL); it does not start a Valkey of its own. ``url``: connect there
    (the caller owns the server).
    """
    direct = url or settings.redis_url
    if direct is not None:
        store = await _connect(settings, direct)
        try:
            yield OpenedStore(store, direct, None)
        finally:
            await store.close()
        return
    if not has_data(settings):
        raise no_data_here(settings)
    owner = await asyncio.to_thread(read_owner, settings.data_dir)
    if owner is not None:
        if not owner.valkey_url:
            raise DataDirError(
                f"data dir {settings.data_dir} is owned by {owner.describe()}, whose Valkey "
                "is not up; try again in a moment"
            )
        if owner.command != "serve":
            raise DataDirError(
                f"data dir {settings.data_dir} is in use by {owner.describe()}; wait for it "
                "to finish, or run `chatlog serve` so that commands can share its log"
            )
        store = await _connect(settings, owner.valkey_url)
        try:
            yield OpenedStore(store, owner.valkey_url, None, owner=owner)
        finally:
            await store.close()
        return
    if not private:
        raise DataDirError(
            f"no chatlog serve owns data dir {settings.data_dir}: start one "
            f"(chatlog serve --data-dir {settings.data_dir}), or set CHATLOG_REDIS_URL"
        )
    async with own_data_dir(settings, command) as owned:
        notice.info("no chatlog serve owns data dir %s: %s runs on a private Valkey, "
                    "stopped when it ends", settings.data_dir, command)
        store = await _connect(settings, owned.url)
        try:
            yield OpenedStore(store, owned.url, owned.embedded, owner=owned.lock.owner,
                              private=True, orphan_stopped=owned.orphan_stopped)
        finally:
            await store.close()


class ValkeySupervisor:
    """Restart the embedded Valkey when it dies, with backoff; give up after N failures.

    While the server is down the store's calls fail (HTTP answers 503); its
    clients reconnect to the same socket once it is back, so the service
    resumes without a restart of ``serve``. ``on_restart`` is called after
    each successful restart (the metrics count them); after ``max_restarts``
    failed attempts in a row, ``on_give_up`` is called with the reason.
    """

    def __init__(
        self,
        ownership: Ownership,
        *,
        max_restarts: int = 5,
        first_backoff: float = 0.2,
        max_backoff: float = 5.0,
        check_interval: float = 0.1,
        on_restart: Callable[[], None] = lambda: None,
        on_give_up: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.ownership = ownership
        self.max_restarts = max_restarts
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self.check_interval = check_interval
        self.on_restart = on_restart
        self.on_give_up = on_give_up
        self.restarts = 0
        self.failure: str | None = None

    async def run(self) -> None:
        embedded = self.ownership.embedded
        if embedded is None:
            return
        while True:
            await asyncio.sleep(self.check_interval)
            code = embedded.exit_code()
            if code is None:
                continue
            pid = embedded.pid
            embedded.forget()
            log.warning("embedded Valkey (pid %s) exited with code %s; restarting it", pid, code)
            if not await self._restart(embedded):
                return

    async def _restart(self, embedded: EmbeddedValkey) -> bool:
        backoff = self.first_backoff
        last = ""
        for attempt in range(1, self.max_restarts + 1):
            await asyncio.sleep(backoff)
            try:
                await _start_embedded(embedded)
            except EmbeddedServerError as exc:
                last = str(exc)
                log.warning("restart %d/%d of the embedded Valkey failed: %s",
                            attempt, self.max_restarts, exc)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            self.restarts += 1
            self.ownership.lock.record(valkey_pid=embedded.pid)
            log.warning("embedded Valkey restarted (pid %s) on %s", embedded.pid, embedded.dir)
            self.on_restart()
            return True
        self.failure = (
            f"the embedded Valkey on {Path(embedded.dir)} died and {self.max_restarts} "
            f"restarts failed (last: {last or 'no error'}); see {embedded.logfile}"
        )
        log.error("%s", self.failure)
        self.on_give_up(self.failure)
        return False
