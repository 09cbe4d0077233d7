"""The append path: one aggregate's events, all or nothing, group-committed.

Concurrent appends are group-committed: appends that arrive while a round
trip is in flight go to Redis together in the next one (one ``APPEND_MANY``
call per partition), each still answered only once Redis has acknowledged it
(with ``appendfsync always``, once it is on disk). With nothing in flight an
append goes from its caller's task, with no task or future of its own.

Group commits are per shard (the node serving the partition: one on a single
server, one per master on a cluster), each with its own queue and round
trips, so a stalled shard delays only the appends to its own partitions.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from redis import exceptions as rexc

from chatlog.errors import (
    EventIdReused,
    EventStoreError,
    IdempotencyConflict,
    InvalidInput,
    OutcomeUnknown,
    StoreUnavailable,
    VersionConflict,
)
from chatlog.events import NewEvent
from chatlog.eventstore._append_args import (
    AppendResult,
    bytes16,
    content_hash,
    event_args,
    results,
)
from chatlog.eventstore._topology import Topology
from chatlog.eventstore.archived_ids import ArchivedIdChecks
from chatlog.eventstore.connection import UNAVAILABLE, as_raised, never_sent, text, unavailable
from chatlog.eventstore.idempotency import spec
from chatlog.eventstore.keys import Keys, partition_of
from chatlog.eventstore.replication import run_replicated
from chatlog.eventstore.scripts import APPEND_MANY, APPEND_ONE

if TYPE_CHECKING:
    from chatlog.eventstore.archive import Archive


class AppendObserver(Protocol):
    """What the append path reports (the metrics implement it)."""

    def appended(self, seconds: float) -> None:
        """An append (one aggregate's batch) was acknowledged after ``seconds``."""

    def committed(self, group_size: int) -> None:
        """``group_size`` appends went to the server in one round trip."""


def content_digest(event: NewEvent) -> str:
    """What makes two appends with one event id the same event: its type, aggregate,
    data and schema version (not the display name of its project)."""
    return _digest(event.type, event.aggregate, event.schema_version, event.data)


def _digest(type_: str, aggregate: str, schema_version: int, data: dict[str, Any]) -> str:
    return content_hash(type_, aggregate, schema_version, data).hexdigest()


class _ProjectKeys(NamedTuple):
    """One project's partition and keys there, formatted once."""

    log: str
    versions: str
    #: The project's key as text (a UUID's ``str`` costs a microsecond).
    project: str
    #: Its event-id keys start with this; the event id follows.
    prefix: str
    partition: int
    #: Its aggregates' index keys start with this; the aggregate follows.
    aggregates: str
    #: The project's 16 bytes (``UUID.bytes`` is Python code, run per call otherwise).
    raw: bytes


class _Pending:
    __slots__ = ("args", "future", "keys")

    def __init__(self, keys: list[str], args: list[Any], future: asyncio.Future[Any]) -> None:
        self.keys = keys
        self.args = args
        self.future = future


class _Shard:
    """One shard's group commit: the appends waiting, and whether one is in flight."""

    __slots__ = ("flusher", "inline", "pending")

    def __init__(self) -> None:
        self.pending: list[_Pending] = []
        self.flusher: asyncio.Task[None] | None = None
        self.inline = False  # an append is in flight from its caller's task


class Appender:
    """The store's append path: builds each append's keys and arguments, sends
    appends in group commits, and reads the replies."""

    def __init__(
        self,
        topology: Topology,
        keys: Keys,
        partitions: int,
        *,
        idempotency_window_ms: int,
        outcome_window_ms: int = 600_000,
        outcome_timeout: float = 5.0,
        max_batch: int,
        ack: str,
        ack_replicas: int,
        ack_timeout: float,
        ack_fsync: bool,
        archive_of: Callable[[], Archive | None] = lambda: None,
    ) -> None:
        self.topology = topology
        self.redis = topology.redis
        self.keys = keys
        self.partitions = partitions
        self.idempotency_window_ms = idempotency_window_ms
        #: How long a server-assigned event id is remembered: long enough to find out
        #: an unanswered append's outcome, and for a client to retry after a 504.
        self.outcome_window_ms = outcome_window_ms
        #: Seconds spent finding out whether an unanswered append was applied.
        self.outcome_timeout = outcome_timeout
        #: ``local``: acknowledged once the primary has it (fsynced with the embedded
        #: default); ``replicated``: also once ``ack_replicas`` replicas have it.
        self.ack = ack
        self.ack_replicas = ack_replicas
        self.ack_timeout = ack_timeout
        #: With ``replicated``: the replicas must have fsynced it (WAITAOF), not only applied it.
        self.ack_fsync = ack_fsync
        self._max_batch = max_batch
        lib = resources.files("chatlog.eventstore").joinpath("append.lua").read_text()
        self._append_script = self.redis.register_script(lib + APPEND_ONE)
        self._append_many_script = self.redis.register_script(lib + APPEND_MANY)
        # As text once: a lean connection sends them as they are.
        self._append_sha = text(self._append_script.sha)
        self._append_source = text(self._append_script.script)
        self._shards: dict[str, _Shard] = {}
        self._project_keys: dict[uuid.UUID, _ProjectKeys] = {}
        self._last_keys: tuple[uuid.UUID, _ProjectKeys] | None = None
        self._closed = False
        #: Until when (epoch ms) the keys per id of the layout before buckets are read
        #: too (set by the store from the log's metadata; see ``idempotency``).
        self.legacy_ids_until = 0
        self.ids = ArchivedIdChecks(archive_of, max(idempotency_window_ms, outcome_window_ms))
        self._ids_spec = tuple(spec(idempotency_window_ms, outcome_window_ms, legacy)
                               for legacy in (False, True))
        #: Told about every acknowledged append and group commit (None: nobody listens).
        self.observer: AppendObserver | None = None

    def _keys_of(self, project: uuid.UUID) -> _ProjectKeys:
        last = self._last_keys  # the same project object as last time: no UUID hash
        if last is not None and last[0] is project:
            return last[1]
        known = self._project_keys.get(project)
        if known is None:
            if len(self._project_keys) >= 10_000:
                self._project_keys.clear()
            partition = partition_of(project, self.partitions)
            known = self._project_keys[project] = _ProjectKeys(
                self.keys.log(partition), self.keys.versions(partition), str(project),
                self.keys.event_ids(partition, project), partition,
                self.keys.aggregate_index(partition, ""), bytes16(project))
        self._last_keys = (project, known)
        return known

    async def close(self) -> None:
        """Refuse new appends; wait for the ones in flight to be answered."""
        self._closed = True
        flushers = [s.flusher for s in self._shards.values() if s.flusher is not None]
        await asyncio.gather(*flushers, return_exceptions=True)

    async def append(
        self,
        events: Sequence[NewEvent],
        expected_version: int | None = None,
        digests: Sequence[str] | None = None,
    ) -> list[AppendResult]:
        """Append events of one aggregate, all or nothing.

        ``expected_version`` (0 = the aggregate must not exist yet) makes the
        append conditional. Every event is deduplicated by its id within its
        project: a batch whose ids were all appended before returns the original
        results and writes nothing (client-chosen ids are remembered for the
        idempotency window, server-made ones for the outcome window); an id
        appended before with other content (``digests``, default
        :func:`content_digest`) raises :class:`EventIdReused`.

        When the store does not answer after the append may have been sent, it
        is sent again (same ids: it cannot land twice) until the store answers,
        for ``outcome_timeout`` seconds; then :class:`OutcomeUnknown`. A
        :class:`StoreUnavailable` means nothing was written.
        """
        if not events:
            return []
        first = events[0]
        project, aggregate_type, aggregate_id = (
            first.project, first.aggregate_type, first.aggregate_id)
        if len(events) > 1:
            for ev in events[1:]:  # str compares first, UUID.__eq__ (Python) only if needed
                if (ev.aggregate_id != aggregate_id or ev.aggregate_type != aggregate_type
                        or (ev.project is not project and ev.project != project)):
                    raise InvalidInput(f"a batch appends to one aggregate; got "
                                       f"{first.aggregate} and {ev.aggregate}")
        if expected_version is not None and expected_version < 0:
            raise InvalidInput(f"expected_version must be 0 or more, not {expected_version}")
        started = time.perf_counter() if self.observer is not None else 0.0
        # Per event only what differs: its id (formatted once), digest, type and body.
        pk = self._keys_of(project)
        partition = pk.partition
        aggregate = f"{pk.project}/{aggregate_type}/{aggregate_id}"
        keys = [pk.log, pk.versions, pk.aggregates + aggregate]
        legacy = self.legacy_ids_until  # 0 on a log that never had keys per id
        args: list[Any] = [
            aggregate,
            -1 if expected_version is None else expected_version,
            self._ids_spec[legacy > 0 and legacy > time.time() * 1000],
            len(events),
        ]
        if digests is not None and len(digests) != len(events):
            raise ValueError(f"{len(digests)} digests for {len(events)} events")
        ids = event_args(events, aggregate, pk.raw, digests, args)
        self.ids.retries(ids, args)
        try:
            reply, resent = await self._submit(keys, args), False
        except BaseException as exc:  # may be in the log: resent (or appended again) looks up
            failed = self.ids.doubt(ids, args, exc)  # raised again unless it says what
            reply, resent = await self._resolve(keys, args, ids, failed), True
        if reply[0] == b"ok":  # the common case: appended, first try (no decode, no checks)
            if self.observer is not None:
                self.observer.appended(time.perf_counter() - started)
            return results(ids, partition, reply, False)
        while (status := text(reply[0])) == "archived?":
            reply = await self._submit(keys, await self.ids.recheck(partition, project, args,
                                                                    reply))
        if status == "reused":
            raise EventIdReused(ids[int(reply[1]) - 1])
        if status == "conflict":
            assert expected_version is not None
            raise VersionConflict(aggregate, expected_version, int(reply[1]))
        if status == "partial":
            raise IdempotencyConflict(
                f"event {events[int(reply[1]) - 1].id} of this batch was not appended before "
                "but others were; retry the whole batch with the ids it had, or new ids"
            )
        # A duplicate of a server-made id after a resend is this append's own first try.
        duplicate = status == "dup" and not (resent and not any(e.id_supplied for e in events))
        if self.observer is not None:
            self.observer.appended(time.perf_counter() - started)
        return results(ids, partition, reply, duplicate)

    async def _resolve(
        self, keys: list[str], args: list[Any], ids: list[str], failed: EventStoreError
    ) -> Any:
        """The reply of an append whose first try failed with ``failed``, learnt by
        resending it; ``failed`` raised again when nothing was written."""
        if isinstance(failed, OutcomeUnknown):
            failed.event_ids = ids
            raise failed
        if never_sent(failed.__cause__):
            raise failed  # nothing was written: a 503 is the truth
        doubt: BaseException = failed
        # It may be in the log. Ask again with the same ids until the store answers:
        # the reply then tells what the log holds, and it cannot land twice.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.outcome_timeout
        delay = 0.05
        while (left := deadline - loop.time()) > 0:
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, 0.5)
            try:
                async with asyncio.timeout(max(deadline - loop.time(), 0.001)):
                    return await self._submit(keys, args)
            except TimeoutError:
                break
            except OutcomeUnknown as exc:
                exc.event_ids = ids
                raise
            except StoreUnavailable:
                continue  # still not there; ``doubt`` says what happened to the append
        raise OutcomeUnknown(
            f"the event store did not answer the append, nor a check within "
            f"{self.outcome_timeout:g} s ({doubt}); the event may or may not be in the log. "
            "Retry with the same event_id: that is safe (it is appended if missing, "
            "and not twice)", ids,
        ) from doubt

    async def _submit(self, keys: list[str], args: list[Any]) -> Any:
        if self._closed:
            raise StoreUnavailable("event store is closed")
        name = self.topology.shard_of(keys[0])
        shard = self._shards.get(name)
        if shard is None:
            shard = self._shards[name] = _Shard()
        flusher = shard.flusher
        if shard.inline or shard.pending or (flusher is not None and not flusher.done()):
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            shard.pending.append(_Pending(keys, args, future))
            if shard.flusher is None or shard.flusher.done():
                shard.flusher = asyncio.get_running_loop().create_task(self._flush(shard))
            return await future
        # Nothing in flight: this append goes from the caller's task (no task, no future
        # of the append path's own, no coroutine more: an awaited append's client CPU is
        # mostly the Python it runs cold after each fsync wait). Appends that arrive
        # meanwhile queue up and go together once it is answered.
        shard.inline = True
        lean = self.topology.lean
        try:
            if lean is not None and self.ack == "local":  # the common case, with least work
                if self.observer is not None:
                    self.observer.committed(1)
                return await lean.evalsha(self._append_sha, self._append_source, keys, args)
            # As in _flush: let the loop deliver pending socket events first, so a pooled
            # connection whose server died is seen at EOF and replaced. (One turn runs the
            # tasks already ready; the events polled in it are handled in the next.)
            # A lean connection checks itself, with no turn of the loop.
            if lean is None:
                await asyncio.sleep(0)
                await asyncio.sleep(0)
            unused: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            reply = (await self._run_scripts([_Pending(keys, args, unused)]))[0]
        except UNAVAILABLE as exc:
            await self.topology.after_unavailable()
            raise unavailable(exc) from exc
        finally:
            shard.inline = False
            if shard.pending and (shard.flusher is None or shard.flusher.done()):
                shard.flusher = asyncio.get_running_loop().create_task(self._flush(shard))
        if isinstance(reply, BaseException):
            raise as_raised(reply)
        return reply

    async def _flush(self, shard: _Shard) -> None:
        # Let the loop deliver pending socket events first: a pooled connection
        # whose server died is then seen at EOF and replaced, instead of failing
        # the append that happens to pick it up.
        await asyncio.sleep(0)
        # Over a lean connection a second group commit goes out while the first is
        # in flight: the client answers one and builds the next while the server
        # runs the other (on one connection, they run in the order sent).
        depth = 2 if self.topology.lean is not None and self.ack == "local" else 1
        running: set[asyncio.Task[None]] = set()
        while shard.pending or running:
            if shard.pending and len(running) < depth:
                batch = shard.pending[: self._max_batch]
                shard.pending = shard.pending[self._max_batch :]
                if depth == 1:
                    await self._commit(batch)
                    continue
                running.add(asyncio.get_running_loop().create_task(self._commit(batch)))
                await asyncio.sleep(0)  # its command goes out; appends arrive meanwhile
                continue
            _, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)

    async def _commit(self, batch: list[_Pending]) -> None:
        """One group commit: send ``batch``, answer each append in it."""
        try:
            replies = await self._run_scripts(batch)
        except UNAVAILABLE as exc:
            err = unavailable(exc)  # its cause tells whether it was sent
            await self.topology.after_unavailable()
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(err)
            return
        except BaseException as exc:  # pragma: no cover - a bug, surfaced to callers
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for p, reply in zip(batch, replies, strict=True):
            if p.future.done():
                continue
            if isinstance(reply, BaseException):
                p.future.set_exception(as_raised(reply))
            else:
                p.future.set_result(reply)

    async def _run_scripts(self, batch: list[_Pending]) -> list[Any]:
        script = self._append_script
        if self.observer is not None:
            self.observer.committed(len(batch))
        if self.ack == "replicated":
            return await run_replicated(
                self.redis, script, batch, self.ack_replicas, self.ack_timeout,  # type: ignore[arg-type]
                self.ack_fsync, node_groups=self.topology.node_groups,
            )
        lean = self.topology.lean
        if len(batch) == 1:
            p = batch[0]
            try:
                if lean is not None:
                    return [await lean.evalsha(self._append_sha, self._append_source,
                                               p.keys, p.args)]
                try:
                    return [await self.redis.evalsha(script.sha, len(p.keys), *p.keys, *p.args)]
                except rexc.NoScriptError:  # EVAL caches it on this node only (SCRIPT LOAD
                    # goes to every primary, and would wait for a stalled one)
                    return [await self.redis.eval(
                        script.script, len(p.keys), *p.keys, *p.args)]  # type: ignore[arg-type]
            except rexc.ResponseError as exc:
                return [exc]
        return await self._run_grouped(batch)

    async def _run_grouped(self, batch: list[_Pending]) -> list[Any]:
        """A group commit as one ``APPEND_MANY`` call per partition, not one per append.

        Each append stays all-or-nothing and independent of the others; the
        server runs one script instead of hundreds and the client packs and
        parses one command and one reply.
        """
        script = self._append_many_script
        groups: dict[str, list[int]] = {}
        for i, p in enumerate(batch):
            groups.setdefault(p.keys[0], []).append(i)
        calls: list[tuple[list[int], list[Any]]] = []
        for log_key, members in groups.items():
            keys: list[Any] = [log_key, batch[members[0]].keys[1]]
            args: list[Any] = [batch[members[0]].args[2], len(members)]
            for i in members:
                p = batch[i]
                keys.extend(p.keys[2:])
                args.extend((p.args[0], p.args[1], *p.args[3:]))
            calls.append((members, [len(keys), *keys, *args]))
        replies: list[Any] = [None] * len(batch)
        todo = calls
        lean = self.topology.lean
        for attempt in (1, 2):
            # A retry sends the script itself (EVAL caches it on that node):
            # SCRIPT LOAD would go to every primary, and wait for a stalled one.
            head: tuple[Any, ...] = (("EVALSHA", script.sha) if attempt == 1
                                     else ("EVAL", script.script))
            results: list[Any]
            if lean is not None:  # one write; errors come back as values
                results = await lean.execute_many([(*head, *command) for _, command in todo])
            else:
                pipe = self.redis.pipeline(transaction=False)
                for _, command in todo:
                    pipe.execute_command(*head, *command)
                results = await pipe.execute(raise_on_error=False)
            again = []
            for (members, command), result in zip(todo, results, strict=True):
                if attempt == 1 and isinstance(result, rexc.NoScriptError):
                    again.append((members, command))  # the server forgot it; nothing ran
                    continue
                if isinstance(result, BaseException):
                    for i in members:
                        replies[i] = result
                    continue
                j = 0
                for i in members:  # per append: status, count c, then c values
                    count = int(result[j + 1])
                    reply = [result[j], *result[j + 2 : j + 2 + count]]
                    if reply[0] == b"err":  # what APPEND_ONE's own failure would have been
                        replies[i] = rexc.ResponseError(bytes(reply[1]).decode(errors="replace"))
                    else:
                        replies[i] = reply
                    j += 2 + count
            if not again:
                break
            todo = again
        return replies

