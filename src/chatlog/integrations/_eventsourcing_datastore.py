"""The eventsourcing recorders' shared datastore: the log, a loop, the scripts, reads."""

from __future__ import annotations

import functools
import logging
import uuid
import weakref
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from redis import Redis
from redis.exceptions import NoScriptError, ResponseError

from chatlog.eventstore.codec import START
from chatlog.eventstore.scripted import run_append_script
from chatlog.identity import ProjectKey
from chatlog.integrations._archived import archived_entries_sync, body_of
from chatlog.integrations._eventsourcing_multi import MULTI_MIN, Memo, Row, Target, Tracked
from chatlog.integrations._eventsourcing_multi import insert as multi_insert
from chatlog.integrations._eventsourcing_reads import body
from chatlog.integrations._eventsourcing_scripts import (
    _CHECK,
    _GUARD,
    _INSERT,
    _PAD,
    _SWAP,
    lacking_key,
    note,
    notifications_key,
)
from chatlog.integrations._runtime import (
    LoopThread,
    close_at_exit,
    digest,
    open_log,
    project_key,
    sync_client,
)
from chatlog.integrations._wire import WirePool

T = TypeVar("T")

log = logging.getLogger(__name__)

#: Reads meet the same few originators again and again.
_uuid = functools.lru_cache(maxsize=4096)(uuid.UUID)


def _raw(response: Any, **options: Any) -> Any:
    return response


def _release_dropped(runner: LoopThread, opened: Any, wire: WirePool | None, redis: Any) -> None:
    """What :meth:`Datastore.close` does, for a datastore collected without it. The
    collector may run this on any thread, the loop's own included: nothing waits."""
    if wire is not None:
        wire.close()
    redis.close()
    runner.close_later(opened.__aexit__(None, None, None))


class Datastore:
    """The log, a loop on a thread of its own, and the scripts, shared by a factory's recorders."""

    def __init__(
        self,
        target: str | Path,
        *,
        project: str | None,
        key_prefix: str | None = None,
        originator_id_type: str = "uuid",
    ) -> None:
        if originator_id_type not in ("uuid", "text"):
            raise ValueError(
                f"ORIGINATOR_ID_TYPE must be 'uuid' or 'text', not {originator_id_type!r}"
            )
        self.originator_id_type = originator_id_type
        self.runner = LoopThread("chatlog-eventsourcing")
        self._opened = open_log(target, key_prefix=key_prefix)
        try:
            self.store, settings = self.runner.run(self._opened.__aenter__())
        except BaseException:
            self.runner.stop()
            raise
        self.project: ProjectKey = project_key(project, settings)
        self.partition = self.store.partition_of(self.project.key)
        # The recorders are called from the library's threads: they use a blocking
        # client with a blocking pool in the calling thread (a hop to the loop's
        # thread per call cost more than the call); the loop serves subscriptions.
        assert self.store.url is not None
        self.redis = sync_client(self.store.url)
        if isinstance(self.redis, Redis):
            # the replies as the server sends them: cheaper to take apart than redis-py's
            # dicts and float scores (a read of 100 notifications parses 100 entries)
            for command in ("XRANGE", "ZRANGEBYSCORE", "ZREVRANGEBYSCORE"):
                self.redis.set_response_callback(command, _raw)
        self.insert_script = self.redis.register_script(_INSERT)
        self.insert_script_async = self.store.redis.register_script(_INSERT)
        self.check_script = self.redis.register_script(_CHECK)
        self.pad_script = self.redis.register_script(_PAD)
        self.swap_script = self.redis.register_script(_SWAP)
        #: Whether large batches may go as MULTI/EXEC: one server, acknowledged locally.
        self.single = isinstance(self.redis, Redis)
        self.multi_ok = self.single and self.store.ack != "replicated"
        #: Raw connections for the hot paths (one plain server): None = redis-py.
        self.wire = WirePool.of(self.redis) if self.single else None
        self._closed = False
        # An application dropped without close() (eventsourcing's own tests drop
        # theirs) releases its connections and its loop thread when it is collected.
        self._dropped = weakref.finalize(self, _release_dropped, self.runner, self._opened,
                                         self.wire, self.redis)
        self._dropped.atexit = False
        close_at_exit(self)  # (an application is seldom closed: its script just ends)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("this chatlog eventsourcing datastore is closed")
        return self.runner.run(coro)

    def close(self) -> None:
        if self._closed or not self._dropped.alive:  # (closed, or being closed as dropped:
            return  # an application in a collected cycle is closed by its __del__ after that)
        self._closed = True
        self._dropped.detach()
        try:
            if self.wire is not None:
                self.wire.close()
            self.redis.close()
            self.runner.run(self._opened.__aexit__(None, None, None))
        finally:
            self.runner.stop()

    def reindex(self) -> int:
        """Rebuild this project's index keys from its events in the log; how many it read.

        For a log copied by ``chatlog migrate``, which carries the events but
        not the recorders' index keys. Idempotent.
        """
        after, seen = START, 0
        sequences: dict[str, int] = {}
        notes: dict[str, dict[int, bytes]] = {}
        while batch := self.run(self.store.read(self.partition, after, 1000)):
            after = batch[-1].position
            pipe = self.redis.pipeline(transaction=False)
            for event in batch:
                if event.aggregate_type != "eventsourcing" or event.project != self.project.key:
                    continue
                seen += 1
                d = event.data
                base = self.base(d["recorder"])
                if event.type == "eventsourcing.recorded":
                    okey = f"{base}:o:{digest(d['originator_id'])}"
                    pipe.zadd(okey, {event.position: d["originator_version"]})
                    nid = d.get("notification_id")
                    if nid is not None:
                        notes.setdefault(base, {})[int(nid)] = note(
                            event.position, d["topic"], d["originator_version"],
                            d["originator_id"])
                        sequences[base] = max(sequences.get(base, 0), int(nid))
                elif event.type == "eventsourcing.tracked":
                    pipe.hset(f"{base}:t", d["upstream"], d["notification_id"])
            pipe.execute()
        for base, top in sequences.items():
            current = int(self.redis.get(f"{base}:seq") or 0)
            if top > current:
                self.redis.set(f"{base}:seq", top)
        for base, by_id in notes.items():  # the list again, in id order (b"": none),
            # built aside, then swapped in with what inserts pushed meanwhile and padded
            # up to every id given (ids whose events the log lacks too)
            listed = [by_id.get(nid, b"") for nid in range(1, max(by_id) + 1)]
            key = notifications_key(base)
            pipe = self.redis.pipeline(transaction=False)
            pipe.delete(f"{key}:rebuilt")
            for i in range(0, len(listed), 1000):
                pipe.rpush(f"{key}:rebuilt", *listed[i:i + 1000])
            pipe.execute()
            self.swap_script(keys=[f"{base}:seq", key, lacking_key(key), f"{key}:rebuilt"],
                             args=[len(listed)])
        return seen

    def check_notifications(self, sequence: str, notifications: str, recorder: str) -> bool:
        """Whether the notification list holds every id the sequence gave; if not (an
        application recorded before the list existed, or a log copied without its
        index keys), say so in the log, once per recorder: its reads would miss them
        until :meth:`reindex` rebuilds the list. The list is padded with placeholders
        up to the ids given first, so that the ids given from now on stay in place."""
        # padded to the ids given, so that inserts from now on keep their ids
        given, listed = self.pad_script(keys=[sequence, notifications,
                                              lacking_key(notifications)])
        if listed >= given:
            return True
        log.warning(
            "eventsourcing recorder %r of project %r: its notification list holds %d of "
            "the %d notification ids given (recorded by an older chatlog, or copied "
            "without its index keys); run the factory's datastore.reindex() once",
            recorder, self.project.display, listed, given)
        return False

    def base(self, recorder: str) -> str:
        tag = self.store.keys.tag(self.partition)
        return f"{tag}:es:{self.project.key}:{digest(recorder)}"

    def originator_id(self, text: str) -> uuid.UUID | str:
        return _uuid(text) if self.originator_id_type == "uuid" else text

    def insert(self, target: Target, rows: list[Row], tracked: Tracked | None,
               application: bool, memo: Memo) -> tuple[str, Any]:
        """Write a batch atomically: ``('ok', notification ids)``, ``('conflict', index
        of the event)`` or ``('tracking', recorded position)``.

        A large batch on one server under ``ack=local`` goes as one MULTI/EXEC
        (:mod:`._eventsourcing_multi`); any other, or one whose watched keys
        changed meanwhile, is one call of the insert script: in this thread under
        ``ack=local``, through the store (on the loop) under ``ack=replicated``."""
        if self.multi_ok and len(rows) >= MULTI_MIN:
            done = multi_insert(self.wire or self.redis.connection_pool, self.check_script,
                                _GUARD, target, rows, tracked, application, memo)
            if done is not None:
                return done
        keys = [target.log, target.versions, target.sequence, target.notifications,
                target.tracking]
        args: list[Any] = [target.base, "1" if application else "0"]
        args += list(tracked) if tracked is not None else ["", 0, "", "", "", "", ""]
        args += [len(rows), target.record_type, target.aggregate_prefix, target.index_prefix]
        for eid, oid, d, version, topic, head, tail, state in rows:
            args += [eid, oid, d, version, topic, head, tail, state]
        if self.store.ack != "replicated":
            reply = self.evalsha(self.insert_script, keys, args)
        else:
            reply = self.run(run_append_script(self.store, self.insert_script_async, keys,
                                               args))
        status = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        if status != "ok":
            return status, int(reply[1])
        return status, [int(x) for x in reply[2 : 2 + 2 * len(rows) : 2]]

    def command(self, *args: Any) -> Any:
        """One command's reply, over a raw connection when there is one (error replies
        raised as redis-py raises them)."""
        wire = self.wire
        if wire is None:
            return self.redis.execute_command(*args)
        conn = wire.get_connection()
        try:
            conn.send_command(*args)
            return conn.read_response()
        except ResponseError:
            raise  # (the connection is still in step)
        except BaseException:
            conn.disconnect()
            raise
        finally:
            wire.release(conn)

    def evalsha(self, script: Any, keys: list[Any], args: list[Any]) -> Any:
        """Run ``script`` (registered on :attr:`redis`), loading it if the server lacks it."""
        if self.wire is None:
            return script(keys=keys, args=args)
        try:
            return self.command("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            self.command("SCRIPT", "LOAD", script.script)
            return self.command("EVALSHA", script.sha, len(keys), *keys, *args)

    def listed(self, key: str, first: int, last: int) -> list[bytes]:
        """Elements ``first`` to ``last`` (0-based, inclusive) of the list ``key``."""
        if self.wire is not None:
            members: list[bytes] = self.command("LRANGE", key, first, last)
            return members
        return list(self.redis.lrange(key, first, last))

    def listed_and_span(self, key: str, first: int, last: int, log: str,
                        after: str) -> tuple[list[bytes], dict[bytes, Any]]:
        """:meth:`listed` and, in the same round trip, the log's entries after ``after``
        (a position, ``(`` for exclusive), by position (their fields as the server
        sends them): as many as the listed notifications span if little else is
        between them (the caller reads those it does not find with :meth:`bodies`)."""
        span = last - first + 9
        pool: Any = self.wire or self.redis.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command(conn.pack_commands([
                ("LRANGE", key, first, last),
                ("XRANGE", log, after, "+", "COUNT", span),
            ]))
            members, entries = conn.read_response(), conn.read_response()
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)
        return members, dict(entries)

    def bodies(self, log: str, positions: list[bytes]) -> list[bytes | None]:
        """The bodies of the entries at ``positions`` (ascending) of the log: one XRANGE
        over their span, one pipelined XRANGE each for those it did not reach, the
        archive for those the stream no longer holds (None: in neither tier).

        Plain commands, not a script: a script's reply of many entries costs the
        server several times what the same XRANGE costs (each reply converted to
        Lua tables and back)."""
        if not positions:
            return []
        found: dict[bytes, bytes] = {}
        if len(positions) > 1:
            span = self.command(
                "XRANGE", log, positions[0], positions[-1], "COUNT", 2 * len(positions))
            found = {pos: body(fields) for pos, fields in span}
        missed = [p for p in positions if p not in found]
        if missed:
            pipe = self.redis.pipeline(transaction=False)
            for pos in missed:
                pipe.execute_command("XRANGE", log, pos, pos)
            for entries in pipe.execute():
                for pos, fields in entries:
                    found[pos] = body(fields)
            gone = [p for p in missed if p not in found]
            if gone:
                archived = archived_entries_sync(self.store, self.partition, gone)
                for text, flat in archived.items():
                    found[text.encode()] = body_of(flat)
        return [found.get(p) for p in positions]
