"""Erasure of a project or a thread from every tier, resumable after a crash.

An erasure is recorded durably first (a Redis hash, and its id in the set of
unfinished erasures), then driven step by step, each step idempotent and its
completion recorded before the next begins:

``recorded``    the request is durable
``tombstoned``  the tombstone (``erasure.recorded``) is in the log; its position
                bounds the erasure: the scope's events before it go, later
                appends are a fresh history
``redis``       the scope's stream entries XDEL'd, aggregate indexes and versions pruned
``archive``     archive segments rewritten without the scope's rows
``read_models`` rows deleted (``secure_delete``), WAL checkpointed with TRUNCATE
``aof``         every node's append-only file rewritten (and waited for); its RDB
                dump file removed when it is under the data dir, else reported
``done``

:meth:`Eraser.resume` (called when ``serve`` starts) drives the unfinished ones.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatlog.erasure import _rdb, _redis
from chatlog.erasure._archive_job import erase_in_child
from chatlog.errors import ArchiveConflict, InvalidInput, NotFound, ProjectNotFound
from chatlog.events import ErasureRecorded, NewEvent, aggregate_key
from chatlog.eventstore import EventStore
from chatlog.eventstore.archiver import holding_lease
from chatlog.eventstore.codec import parse_position
from chatlog.eventstore.connection import guard, text
from chatlog.projections.erasure import (
    ROW_AGGREGATES,
    applied_position,
    count_rows,
    purge_read_model,
)
from chatlog.settings import Settings

if TYPE_CHECKING:  # pyarrow is imported when an erasure opens the archive, not at start
    from chatlog.eventstore.archive import Archive

STEPS = ("recorded", "tombstoned", "redis", "archive", "read_models", "aof", "done")

#: Called with each step an erasure completed (a fault hook for tests).
StepHook = Callable[[str], None]
#: Waits until the local projector has applied the log up to a position.
ReachedWait = Callable[[int, str], Awaitable[None]]


@dataclass(slots=True)
class ErasureReport:
    """What an erasure did so far (``state`` ``done`` once every tier is rewritten)."""

    erasure_id: str
    project: str
    project_name: str
    thread_id: str | None
    requested_by: str
    requested_at: float
    #: The scope is the aggregates whose key (after ``<project>/``) starts with this
    #: (an integration's: ``langgraph/<thread id>/``); None: the thread or the project.
    aggregates: str | None = None
    step: str = "recorded"
    tombstone_position: str | None = None
    #: Events erased per tier: ``redis``, ``archive``.
    events_erased: dict[str, int] = field(default_factory=dict)
    read_model_rows: int = 0
    #: Bytes of archive segments written anew, and of the AOF files rewritten.
    bytes_rewritten: int = 0
    aof_rewrites: int = 0
    #: Per node: its RDB file, whether the erasure removed it, whether one may still
    #: hold erased content and why (see ``chatlog.erasure._rdb``).
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    finished_at: float | None = None
    error: str | None = None

    @property
    def scope(self) -> str:
        if self.thread_id is not None:
            return "thread"
        return "aggregates" if self.aggregates is not None else "project"

    @property
    def state(self) -> str:
        if self.step == "done":
            return "done"
        return "failed" if self.error else "running"

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["scope"] = self.scope
        out["state"] = self.state
        out["progress"] = f"{STEPS.index(self.step)}/{len(STEPS) - 1}"
        return out

    def _fields(self) -> dict[bytes | bytearray | memoryview | str | int | float,
                              bytes | bytearray | memoryview | str | int | float]:
        return {
            "erasure_id": self.erasure_id, "project": self.project,
            "project_name": self.project_name, "thread_id": self.thread_id or "",
            "scope": self.scope, "aggregates": self.aggregates or "",
            "requested_by": self.requested_by,
            "requested_at": repr(self.requested_at), "step": self.step,
            "tombstone_position": self.tombstone_position or "",
            "events_redis": str(self.events_erased.get("redis", 0)),
            "events_archive": str(self.events_erased.get("archive", 0)),
            "read_model_rows": str(self.read_model_rows),
            "bytes_rewritten": str(self.bytes_rewritten),
            "aof_rewrites": str(self.aof_rewrites),
            "snapshots": json.dumps(self.snapshots),
            "finished_at": "" if self.finished_at is None else repr(self.finished_at),
            "error": self.error or "",
        }

    @classmethod
    def _of(cls, raw: dict[Any, Any]) -> ErasureReport:
        f = {text(k): text(v) for k, v in raw.items()}
        return cls(
            erasure_id=f["erasure_id"], project=f["project"], project_name=f["project_name"],
            thread_id=f["thread_id"] if f.get("scope") == "thread" else None,
            requested_by=f.get("requested_by", ""), requested_at=float(f["requested_at"]),
            aggregates=f.get("aggregates") if f.get("scope") == "aggregates" else None,
            step=f["step"], tombstone_position=f.get("tombstone_position") or None,
            events_erased={"redis": int(f.get("events_redis", 0)),
                           "archive": int(f.get("events_archive", 0))},
            read_model_rows=int(f.get("read_model_rows", 0)),
            bytes_rewritten=int(f.get("bytes_rewritten", 0)),
            aof_rewrites=int(f.get("aof_rewrites", 0)),
            snapshots=json.loads(f.get("snapshots") or "[]"),
            finished_at=float(f["finished_at"]) if f.get("finished_at") else None,
            error=f.get("error") or None,
        )


#: Seconds an eraser without its own projector waits for the read model's (``serve``'s)
#: to apply the tombstone before it purges the rows itself.
READ_MODEL_WAIT = 30.0

#: Rewrites of a partition's archive tried when another archiver published meanwhile.
ARCHIVE_ATTEMPTS = 3

#: A fault hook for crash tests: ``serve`` kills itself (SIGKILL, as ``kill -9``)
#: right after an erasure records the step this variable names.
FAULT_ENV = "CHATLOG_FAULT_ERASE_AFTER"


def erasure_fault_hook() -> StepHook | None:
    """The hook :data:`FAULT_ENV` asks for (None when it is unset)."""
    stop_after = os.environ.get(FAULT_ENV)
    if not stop_after:
        return None

    def hook(step: str) -> None:
        if step == stop_after:
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def eraser_for(settings: Settings, store: EventStore,
               wait_applied: ReachedWait | None = None) -> Eraser:
    """The eraser of ``settings``' data dir: its archive and its read model.

    ``wait_applied`` defaults to watching the read model file's checkpoint (its
    projector may be another process, ``serve``) for up to ``readmodel_wait`` s.
    """
    path = settings.sqlite_path

    async def file_applied(partition: int, position: str) -> None:
        if not path.exists():
            return  # no read model here: nothing to wait for
        deadline = time.monotonic() + READ_MODEL_WAIT
        target = parse_position(position)
        while time.monotonic() < deadline:
            seen = await asyncio.to_thread(applied_position, path, partition)
            if parse_position(seen) >= target:
                return
            await asyncio.sleep(0.05)

    def archive() -> Archive | None:  # opened when needed: an absent archive stays absent
        if store.archive is not None:  # the readers' own: they see the erasure at once
            return store.archive
        where = settings.archive_dir
        if not where.exists():
            return None
        from chatlog.eventstore.archive import Archive

        return Archive.open(str(where))

    return Eraser(store, archive=archive, read_models=[path],
                  wait_applied=wait_applied or file_applied, on_step=erasure_fault_hook(),
                  data_dir=settings.data_dir)


class Eraser:
    """Erases projects and threads from the log, the archive, the read models and
    the servers' files; each erasure resumable after a crash.

    ``archive``: the archive, or a function that opens it when an erasure needs it
    (None: no archive); ``read_models``: the SQLite files to purge (the projector's);
    ``wait_applied``: waits until the local projector has applied up to a position (so no batch it
    read before the deletion writes the rows back); ``on_step``: called after each
    step is recorded; ``rewrite_aof`` off: the ``aof`` step leaves the servers' files
    (their AOF and RDB snapshots) to a later erasure's rewrite (several erasures run
    back to back rewrite once, in the last; requested before any runs, it survives a
    crash as pending); ``lease_wait``: how long the archive step waits for a running
    archiver pass to release the partition's lease; ``data_dir``: the chatlog data
    dir, under which a server's RDB dump file is ours to remove after the AOF rewrite.
    """

    def __init__(self, store: EventStore, *,
                 archive: Archive | Callable[[], Archive | None] | None = None,
                 read_models: Sequence[Path] = (), wait_applied: ReachedWait | None = None,
                 on_step: StepHook | None = None, aof_timeout: float = 300.0,
                 rewrite_aof: bool = True, lease_wait: float = 900.0,
                 data_dir: Path | None = None) -> None:
        self.store = store
        self.archive = archive
        self.read_models = list(read_models)
        self.wait_applied = wait_applied
        self.on_step = on_step
        self.aof_timeout = aof_timeout
        self.rewrite_aof = rewrite_aof
        self.lease_wait = lease_wait
        self.data_dir = data_dir
        self._lock = asyncio.Lock()

    async def request(self, project: uuid.UUID, project_name: str, thread_id: str | None = None,
                      *, aggregates: str | None = None, requested_by: str = "") -> ErasureReport:
        """Record an erasure durably (not yet run); :meth:`run` or :meth:`resume` drives it."""
        if thread_id is not None and aggregates is not None:
            raise InvalidInput("erase a thread or the aggregates under a prefix, not both")
        if aggregates is not None and (not aggregates or aggregates.startswith("erasure/")):
            raise InvalidInput(f"cannot erase the aggregates under {aggregates!r}")
        report = ErasureReport(
            erasure_id=str(uuid.uuid4()), project=str(project), project_name=project_name,
            thread_id=thread_id, requested_by=requested_by, requested_at=time.time(),
            aggregates=aggregates,
        )
        await self._save(report)
        await guard(self.store.redis.sadd(self.store.keys.erasures, report.erasure_id))
        return report

    async def tombstone(self, erasure_id: str) -> ErasureReport:
        """Take a recorded erasure's first step now: append its tombstone, which cuts the
        log (what comes before it is erased; what is appended after it is kept). Not
        behind another erasure's AOF rewrite, as :meth:`run` would take it: the API
        answers with the tombstone, so nothing acknowledged after the answer is erased."""
        report = await self.status(erasure_id)
        if report is None:
            raise KeyError(erasure_id)
        if report.step == "recorded":
            await self._tombstoned(report)
            report.step = "tombstoned"
            await self._save(report)
            if self.on_step is not None:
                self.on_step("tombstoned")
        return report

    async def erase(self, project: uuid.UUID, project_name: str, thread_id: str | None = None,
                    *, requested_by: str = "") -> ErasureReport:
        """Erase ``project`` (or only its thread ``thread_id``) from every tier; return
        the report once the physical erasure is complete (library entry point, e.g.
        for a checkpoint saver's ``adelete_thread``)."""
        report = await self.request(project, project_name, thread_id, requested_by=requested_by)
        return await self.run(report.erasure_id)

    async def erase_aggregates(self, project: uuid.UUID, project_name: str,
                               aggregate_type: str, id_prefix: str, *,
                               requested_by: str = "") -> ErasureReport:
        """Erase every aggregate of ``project`` of ``aggregate_type`` whose id starts
        with ``id_prefix`` (a LangGraph thread's checkpoints: ``("langgraph",
        f"{thread_id}/")``) from every tier, like :meth:`erase`."""
        report = await self.request(project, project_name,
                                    aggregates=f"{aggregate_type}/{id_prefix}",
                                    requested_by=requested_by)
        return await self.run(report.erasure_id)

    async def require_scope(self, project: uuid.UUID, project_name: str,
                            thread_id: str | None = None) -> None:
        """Refuse to erase what the log never held (a misspelt project or thread would
        otherwise "succeed"): 404 :class:`ProjectNotFound` / :class:`NotFound`."""
        if await self.holds(project, thread_id):
            return
        if thread_id is None:
            raise ProjectNotFound(project_name, str(project))
        raise NotFound(f"project {project_name!r} has no thread {thread_id!r}")

    async def holds(self, project: uuid.UUID, thread_id: str | None = None) -> bool:
        """Whether the log holds anything of ``project`` (or of its thread ``thread_id``):
        every writer sets its aggregate's version, and only an erasure removes it."""
        versions = self.store.keys.versions(self.store.partition_of(project))
        if thread_id is not None:
            agg = aggregate_key(project, "thread", thread_id)
            return bool(await guard(self.store.redis.hexists(versions, agg)))
        pattern = _redis.glob_escape(f"{project}/") + "*"
        async for _ in self.store.redis.hscan_iter(versions, match=pattern, count=1000):
            return True
        return False

    async def status(self, erasure_id: str) -> ErasureReport | None:
        raw = await guard(self.store.redis.hgetall(self.store.keys.erasure(erasure_id)))
        return ErasureReport._of(raw) if raw else None

    async def pending(self) -> list[str]:
        """Ids of the erasures not finished yet."""
        return sorted(text(m) for m in await guard(
            self.store.redis.smembers(self.store.keys.erasures)))

    async def resume(self) -> list[ErasureReport]:
        """Drive every unfinished erasure to its end (``serve`` calls this on start)."""
        return [await self.run(i) for i in await self.pending()]

    async def run(self, erasure_id: str) -> ErasureReport:
        """Drive one erasure from the step it reached to ``done``."""
        async with self._lock:  # one erasure at a time: they share the AOF rewrites
            report = await self.status(erasure_id)
            if report is None:
                raise KeyError(erasure_id)
            try:
                while report.step != "done":
                    step = STEPS[STEPS.index(report.step) + 1]
                    await getattr(self, f"_{step}")(report)
                    report.step = step
                    report.error = None
                    if step == "done":
                        report.finished_at = time.time()
                    await self._save(report)
                    if self.on_step is not None:
                        self.on_step(step)
            except Exception as exc:
                report.error = f"{type(exc).__name__}: {exc}"
                await self._save(report)
                raise
            await guard(self.store.redis.srem(self.store.keys.erasures, erasure_id))
            return report

    async def _save(self, report: ErasureReport) -> None:
        await guard(self.store.redis.hset(self.store.keys.erasure(report.erasure_id),
                                          mapping=report._fields()))

    # -- the steps ------------------------------------------------------------------

    @property
    def _partition_count(self) -> int:
        return self.store.partitions

    def _scope(self, report: ErasureReport) -> tuple[int, str | None, str | None]:
        """The partition, the one aggregate key (a thread) and the key prefix (aggregates)."""
        project = uuid.UUID(report.project)
        agg = (None if report.thread_id is None
               else aggregate_key(project, "thread", report.thread_id))
        prefix = None if report.aggregates is None else f"{project}/{report.aggregates}"
        return self.store.partition_of(project), agg, prefix

    async def _tombstoned(self, report: ErasureReport) -> None:
        partition, agg, prefix = self._scope(report)
        if report.scope != "aggregates":  # counted before a projector can delete them
            report.read_model_rows = sum([
                await asyncio.to_thread(count_rows, p, report.project, report.thread_id)
                for p in self.read_models if p.exists()])
        data = ErasureRecorded(
            erasure_id=report.erasure_id, scope=report.scope,
            thread_id=report.thread_id, aggregates=report.aggregates,
            events=await _redis.count_scope(self.store, partition, report.project, agg, prefix),
            requested_by=report.requested_by,
            requested_at=datetime.fromtimestamp(report.requested_at, tz=UTC))
        event = NewEvent.of(
            data, project=uuid.UUID(report.project), project_name=report.project_name,
            aggregate_type="erasure", aggregate_id=report.erasure_id,
            event_id=uuid.UUID(report.erasure_id))  # a retry after a crash appends nothing
        result = await self.store.append_one(event)
        report.tombstone_position = result.position

    async def _redis(self, report: ErasureReport) -> None:
        partition, agg, prefix = self._scope(report)
        assert report.tombstone_position is not None
        n = await _redis.erase_hot(self.store, partition, report.project, agg,
                                   report.tombstone_position, prefix=prefix)
        if report.scope == "project":  # a project's jobs (records, queue and dead letters) go too,
            await _redis.erase_jobs(self.store, partition, report.project)
            # and the integrations' indexes of it (LangGraph, eventsourcing)
            await _redis.erase_integration_keys(self.store, partition, report.project)
        report.events_erased["redis"] = report.events_erased.get("redis", 0) + n

    async def _archive(self, report: ErasureReport) -> None:
        partition, agg, prefix = self._scope(report)
        assert report.tombstone_position is not None
        # The archiver's lease, as a deletion takes it: no pass (of this node's serve or
        # another's) publishes, or removes files it does not list, while the segments
        # are rewritten; a pass that read the scope's entries before they were XDEL'd
        # has published them by the time the lease is ours, so they are erased too.
        # The rewrite runs in a low-priority child process (``_archive_job``): appends
        # keep the CPU and this process's interpreter lock.
        for attempt in range(ARCHIVE_ATTEMPTS):
            async with holding_lease(self.store, partition, wait=self.lease_wait) as fence:
                archive = self.archive() if callable(self.archive) else self.archive
                if archive is None:
                    return
                try:
                    done = await erase_in_child(archive.url, partition, report.project, agg,
                                                report.tombstone_position, prefix, fence)
                except ArchiveConflict:  # a holder whose lease lapsed published meanwhile
                    if attempt + 1 == ARCHIVE_ATTEMPTS:
                        raise
                    continue
                finally:
                    archive.reload()  # this process's readers: the new manifest
            report.events_erased["archive"] = (report.events_erased.get("archive", 0)
                                               + done["events"])
            report.bytes_rewritten += done["bytes_rewritten"]
            return

    async def _read_models(self, report: ErasureReport) -> None:
        partition, _, _ = self._scope(report)
        assert report.tombstone_position is not None
        if report.aggregates is not None and \
                report.aggregates.partition("/")[0] not in ROW_AGGREGATES:
            return  # the read models keep no rows of an integration's aggregates
        if self.wait_applied is not None:
            await self.wait_applied(partition, report.tombstone_position)
        purged = 0
        for path in self.read_models:
            if path.exists():
                purged += await asyncio.to_thread(
                    purge_read_model, path, report.project, report.thread_id,
                    report.aggregates, before=report.tombstone_position)
        # The projector deleted most of them when it applied the tombstone: the rows
        # were counted before it was appended.
        report.read_model_rows = max(report.read_model_rows, purged)

    async def _aof(self, report: ErasureReport) -> None:
        if not self.rewrite_aof:
            return
        report.aof_rewrites += await _redis.rewrite_aof(self.store, self.aof_timeout,
                                                        self.data_dir)
        # then the snapshots: removed under the data dir, reported elsewhere
        notes = await _rdb.settle_snapshots(self.store, self.data_dir, report.requested_at,
                                            self.aof_timeout)
        report.snapshots = [n.as_dict() for n in notes]

    async def _done(self, report: ErasureReport) -> None:
        return None

