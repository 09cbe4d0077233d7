"""The committed position (replicated high watermark): under ``ack=replicated`` every
read path of the store delivers only what the replicas acknowledged."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Callable

import redis

from chatlog.errors import NotReplicated
from chatlog.eventstore import Cursor, EmbeddedValkey, EventStore
from tests.helpers import eventually, message


async def primary_with_replica(
    valkey_factory: Callable[..., EmbeddedValkey],
) -> tuple[EmbeddedValkey, EmbeddedValkey]:
    primary = valkey_factory(port=0, extra_args=["--repl-diskless-sync", "yes",
                                                 "--repl-diskless-sync-delay", "0"])
    replica = valkey_factory(port=0, extra_args=["--replicaof", "127.0.0.1", str(primary.port)])

    def linked() -> bool:
        with redis.Redis(host="127.0.0.1", port=int(replica.port or 0)) as r:
            return r.info("replication").get("master_link_status") == "up"

    await eventually(linked, timeout=20, what="the replica to link up")
    return primary, replica


async def test_readers_stop_at_the_committed_position(
    valkey_factory: Callable[..., EmbeddedValkey], key_prefix: str
) -> None:
    primary, replica = await primary_with_replica(valkey_factory)
    store = await EventStore.open(primary.url, prefix=key_prefix, ack="replicated",
                                  ack_replicas=1, ack_timeout=0.3)
    seen: list[str] = []

    async def follow() -> None:
        async for batch in store.tail(Cursor.start(1), block=0.1):
            seen.extend(str(e.id) for e in batch)

    follower = asyncio.create_task(follow())
    assert replica.process is not None
    try:
        kept = await store.append_one(message(content="replicated"))
        await eventually(lambda: seen == [str(kept.event_id)], what="the tail to deliver it")
        os.kill(replica.process.pid, signal.SIGSTOP)
        try:
            unconfirmed = message(content="only on the primary", event_id=uuid.uuid4())
            try:
                await store.append_one(unconfirmed)
                raise AssertionError("the append was acknowledged without its replica")
            except NotReplicated:
                pass
            assert await store.redis.xlen(store.keys.log(0)) == 2
            # No read path goes past the committed position.
            assert [str(e.id) for e in await store.read(0)] == [str(kept.event_id)]
            assert len(await store.read_flat(0)) == 1
            assert len([e async for chunk in store.scan_flat(0) for e in chunk]) == 1
            events = await store.read_aggregate(unconfirmed.project, "thread", "thread-1")
            assert [str(e.id) for e in events] == [str(kept.event_id)]
            assert (await store.heads()).positions == [kept.position]
            assert await store.head(0) == kept.position
            info = await store.log_info(0, kept.position)
            assert info.next_position is None and info.head == kept.position
            assert (await store.committed()).positions == [kept.position]
            # A confirmation while the replica is away confirms nothing.
            assert (await store.confirm_committed()).positions == [kept.position]
        finally:
            os.kill(replica.process.pid, signal.SIGCONT)
        # Once replicated, the retry (a duplicate) confirms it and readers get it, once.
        await store.append_one(unconfirmed)
        await eventually(lambda: seen == [str(kept.event_id), str(unconfirmed.id)],
                         what="the tail to deliver the confirmed entry")
        assert len(await store.read(0)) == 2
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        await store.close()


async def test_opening_with_replicated_acks_confirms_what_the_replicas_hold(
    valkey_factory: Callable[..., EmbeddedValkey], key_prefix: str
) -> None:
    """A log written under ack=local (or copied by migrate) is readable once replicated."""
    primary, _ = await primary_with_replica(valkey_factory)
    async with await EventStore.open(primary.url, prefix=key_prefix) as local:
        written = [await local.append_one(message(content=str(i))) for i in range(3)]
    async with await EventStore.open(primary.url, prefix=key_prefix, ack="replicated",
                                     ack_replicas=1, ack_timeout=5.0) as replicated:
        assert replicated.committed_only
        assert (await replicated.committed()).positions == [written[-1].position]
        assert len(await replicated.read(0)) == 3


async def test_ack_fsync_waits_once_per_group_commit(
    valkey_factory: Callable[..., EmbeddedValkey], key_prefix: str
) -> None:
    """One WAIT + WAITAOF per group commit (per shard), not per append."""
    primary, replica = await primary_with_replica(valkey_factory)
    async with await EventStore.open(primary.url, prefix=key_prefix, ack="replicated",
                                     ack_replicas=1, ack_timeout=5.0,
                                     ack_fsync=True) as store:
        await store.redis.config_resetstat()
        results = await asyncio.gather(*(store.append_one(message(content=str(i)))
                                         for i in range(100)))
        assert sorted(r.version for r in results) == list(range(1, 101))
        stats = await store.redis.info("commandstats")
        waitaof = stats.get("cmdstat_waitaof", {}).get("calls", 0)
        assert 1 <= waitaof <= 5, f"{waitaof} WAITAOF calls for 100 concurrent appends"
        # WAIT goes first: it makes the replica acknowledge at once (REPLCONF GETACK), and
        # its acknowledgement carries its AOF fsync offset; a WAITAOF alone waited for the
        # replica's next periodic acknowledgement (up to 1 s: the 30x of issue 19 #3).
        wait = stats.get("cmdstat_wait", {}).get("calls", 0)
        assert wait >= waitaof, f"{waitaof} WAITAOF calls but only {wait} WAIT"
        with redis.Redis(host="127.0.0.1", port=int(replica.port or 0)) as r:
            assert r.xlen(store.keys.log(0)) == 100


async def test_a_script_that_wrote_nothing_moves_no_committed_position(
    valkey_factory: Callable[..., EmbeddedValkey], key_prefix: str
) -> None:
    """An integration's script may answer ``{'ok'}`` with no position (nothing to write):
    the committed position stays where it is (it used to raise IndexError)."""
    from types import SimpleNamespace

    from chatlog.eventstore.replication import advance_committed

    server = valkey_factory()
    async with await EventStore.open(server.url, prefix=key_prefix) as store:
        written = await store.append_one(message(content="before"))
        log_key = store.keys.log(0)
        await advance_committed(store.redis, [SimpleNamespace(keys=[log_key], args=[])],
                                [[b"ok"]])
        await advance_committed(store.redis, [SimpleNamespace(keys=[log_key], args=[])],
                                [[b"ok", written.position.encode(), b"1"]])
        assert (await store.redis.xrevrange(store.keys.committed(0), "+", "-", 1))[0][0] \
            == written.position.encode()
