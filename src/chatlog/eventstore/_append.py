"""The append path: one aggregate's events, all or nothing, group-committed.

Concurrent appends are group-committed: appends that arrive while a round
trip is in flight go to Redis together in the next one (one ``APPEND_MANY``
call per partition), each still answered only once Redis has acknowledged it
(with ``appendfsync always``, once it is on disk). With nothing in flight an
append goes from its caller's task, with no task or future of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis import exceptions as rexc

from chatlog.errors import IdempotencyConflict, InvalidInput, StoreUnavailable, VersionConflict
from chatlog.events import NewEvent
from chatlog.eventstore._topology import Topology
from chatlog.eventstore.codec import encode_body
from chatlog.eventstore.connection import UNAVAILABLE, text, unavailable
from chatlog.eventstore.keys import Keys, partition_of
from chatlog.eventstore.replication import run_replicated
from chatlog.eventstore.scripts import APPEND_MANY, APPEND_ONE


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What the log assigned to one appended event."""

    event_id: str
    partition: int
    position: str
    version: int
    #: True when the event id was appended before: nothing new was written.
    duplicate: bool = False


class _Pending:
    __slots__ = ("args", "future", "keys")

    def __init__(self, keys: list[str], args: list[Any], future: asyncio.Future[Any]) -> None:
        self.keys = keys
        self.args = args
        self.future = future


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
        max_batch: int,
        ack: str,
        ack_replicas: int,
        ack_timeout: float,
        ack_fsync: bool,
    ) -> None:
        self.topology = topology
        self.redis = topology.redis
        self.keys = keys
        self.partitions = partitions
        self.idempotency_window_ms = idempotency_window_ms
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
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        self._inline = False  # an append is in flight from its caller's task
        self._closed = False

    async def close(self) -> None:
        """Refuse new appends; wait for the ones in flight to be answered."""
        self._closed = True
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)

    async def append(
        self, events: Sequence[NewEvent], expected_version: int | None = None
    ) -> list[AppendResult]:
        """Append events of one aggregate, all or nothing.

        ``expected_version`` (0 = the aggregate must not exist yet) makes the
        append conditional. A batch whose client-supplied ids were all
        appended before returns the original results and writes nothing.
        """
        if not events:
            return []
        first = events[0]
        aggregate = first.aggregate
        ident = (first.project, first.aggregate_type, first.aggregate_id)
        for ev in events[1:]:
            if (ev.project, ev.aggregate_type, ev.aggregate_id) != ident:
                raise InvalidInput(
                    f"a batch appends to one aggregate; got {aggregate} and {ev.aggregate}"
                )
        if expected_version is not None and expected_version < 0:
            raise InvalidInput(f"expected_version must be 0 or more, not {expected_version}")
        partition = partition_of(first.project, self.partitions)
        log_key = self.keys.log(partition)
        keys = [
            log_key,
            self.keys.versions(partition),
            self.keys.aggregate_index(partition, aggregate),
        ]
        args: list[Any] = [
            aggregate,
            -1 if expected_version is None else expected_version,
            self.idempotency_window_ms,
            len(events),
        ]
        ids = [str(ev.id) for ev in events]
        for ev, event_id in zip(events, ids, strict=True):
            # The script reads an event's id key only for a client-chosen id; for the
            # others any key of the partition's slot will do, and costs nothing to build.
            keys.append(self.keys.event_id(partition, ev.id) if ev.id_supplied else log_key)
            args.extend((event_id, "1" if ev.id_supplied else "0", ev.type, encode_body(ev)))
        reply = await self._submit(keys, args)
        status = text(reply[0])
        if status == "conflict":
            assert expected_version is not None
            raise VersionConflict(aggregate, expected_version, int(reply[1]))
        if status == "partial":
            raise IdempotencyConflict(
                f"event {events[int(reply[1]) - 1].id} of this batch was not appended before "
                "but others were; retry the whole batch with the ids it had, or new ids"
            )
        duplicate = status == "dup"
        return [
            AppendResult(
                event_id=event_id,
                partition=partition,
                position=reply[1 + 2 * i].decode(),
                version=int(reply[2 + 2 * i]),
                duplicate=duplicate,
            )
            for i, event_id in enumerate(ids)
        ]

    async def _submit(self, keys: list[str], args: list[Any]) -> Any:
        if self._closed:
            raise StoreUnavailable("event store is closed")
        if not self._inline and not self._pending and (
            self._flusher is None or self._flusher.done()
        ):
            return await self._submit_inline(keys, args)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(keys, args, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def _submit_inline(self, keys: list[str], args: list[Any]) -> Any:
        """Nothing in flight: send this append from the caller's task (no task, no future).

        Appends that arrive meanwhile queue up and go together once it is answered.
        """
        self._inline = True
        try:
            # As in _flush: let the loop deliver pending socket events first, so a pooled
            # connection whose server died is seen at EOF and replaced. (One turn runs the
            # tasks already ready; the events polled in it are handled in the next.)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            unused: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            reply = (await self._run_scripts([_Pending(keys, args, unused)]))[0]
        except UNAVAILABLE as exc:
            await self.topology.after_unavailable()
            raise unavailable(exc) from exc
        finally:
            self._inline = False
            if self._pending and (self._flusher is None or self._flusher.done()):
                self._flusher = asyncio.get_running_loop().create_task(self._flush())
        if isinstance(reply, BaseException):
            raise unavailable(reply) if isinstance(reply, UNAVAILABLE) else reply
        return reply

    async def _flush(self) -> None:
        # Let the loop deliver pending socket events first: a pooled connection
        # whose server died is then seen at EOF and replaced, instead of failing
        # the append that happens to pick it up.
        await asyncio.sleep(0)
        while self._pending:
            batch = self._pending[: self._max_batch]
            self._pending = self._pending[self._max_batch :]
            try:
                replies = await self._run_scripts(batch)
            except UNAVAILABLE as exc:
                err = unavailable(exc)
                await self.topology.after_unavailable()
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(err)
                continue
            except BaseException as exc:  # pragma: no cover - a bug, surfaced to callers
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for p, reply in zip(batch, replies, strict=True):
                if p.future.done():
                    continue
                if isinstance(reply, BaseException):
                    p.future.set_exception(
                        unavailable(reply) if isinstance(reply, UNAVAILABLE) else reply
                    )
                else:
                    p.future.set_result(reply)

    async def _run_scripts(self, batch: list[_Pending]) -> list[Any]:
        script = self._append_script
        if self.ack == "replicated":
            return await run_replicated(
                self.redis, script, batch, self.ack_replicas, self.ack_timeout,  # type: ignore[arg-type]
                self.ack_fsync, node_groups=self.topology.node_groups,
            )
        if len(batch) == 1:
            p = batch[0]
            try:
                return [await script(keys=p.keys, args=p.args)]
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
        for attempt in (1, 2):
            pipe = self.redis.pipeline(transaction=False)
            for _, command in todo:
                pipe.execute_command("EVALSHA", script.sha, *command)
            results: list[Any] = await pipe.execute(raise_on_error=False)
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
            script.sha = await self.redis.script_load(script.script)
            todo = again
        return replies
