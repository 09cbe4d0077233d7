"""The event store on a 3-master Redis Cluster: URL forms, partitions spread over the
shards, tails across slots, replicated acknowledgements (cluster and one server)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from chatlog.errors import ConfigError, NotReplicated, StoreUnavailable
from chatlog.events import RecordedEvent
from chatlog.eventstore import Cursor, EmbeddedValkey, EventStore
from chatlog.eventstore.cluster import connect_cluster, is_cluster_url
from chatlog.testing import LocalCluster
from tests.helpers import eventually, message

pytestmark = pytest.mark.cluster


def _replica_xlen(cluster: LocalCluster, replica: EmbeddedValkey, key: str) -> int:
    with cluster.client(replica) as r:
        pipe = r.pipeline(transaction=False)
        pipe.execute_command("READONLY")
        pipe.xlen(key)
        return int(pipe.execute()[1])


def test_cluster_url_forms() -> None:
    assert is_cluster_url("redis+cluster://h:7000") and is_cluster_url("rediss+cluster://h:1")
    assert not is_cluster_url("redis://h:7000") and not is_cluster_url("unix:///tmp/s")
    with pytest.raises(ConfigError, match="names no node"):
        connect_cluster("redis+cluster://")
    with pytest.raises(ConfigError, match="only database 0"):
        connect_cluster("redis+cluster://127.0.0.1:7000/3")
    with pytest.raises(ConfigError, match="not host:port"):
        connect_cluster("redis+cluster://127.0.0.1:7000,nohost")


async def test_an_unreachable_cluster_is_store_unavailable(key_prefix: str) -> None:
    from chatlog.eventstore.embedded import free_port

    with pytest.raises(StoreUnavailable, match="unavailable"):
        await EventStore.open(f"redis+cluster://127.0.0.1:{free_port()}", prefix=key_prefix)


async def test_sixteen_partitions_spread_over_every_master(
    session_cluster: LocalCluster, store_factory: Callable[..., object], cluster_url: str
) -> None:
    store: EventStore = await store_factory(cluster_url, partitions=16)  # type: ignore[misc]
    assert store.is_cluster
    owners = {session_cluster.master_of(store.keys.log(p)).port for p in range(16)}
    assert len(owners) == 3
    names = [f"project-{i}" for i in range(40)]
    results = await asyncio.gather(*(store.append_one(message(project=n)) for n in names))
    assert len({r.partition for r in results}) > 8
    events, cursor = await store.read_cursor(Cursor.start(16), limit=1000)
    assert sorted(e.project_name for e in events) == sorted(names)
    assert cursor == await store.heads()
    status = await store.status()
    assert status.server == "valkey" and status.length == 40 and len(status.partitions) == 16


async def test_tail_across_partitions_merges_every_slot(
    store_factory: Callable[..., object], cluster_url: str
) -> None:
    store: EventStore = await store_factory(cluster_url, partitions=16)  # type: ignore[misc]
    writer: EventStore = await store_factory(cluster_url, partitions=16)  # type: ignore[misc]
    got: list[RecordedEvent] = []
    idle = 0

    async def on_idle() -> None:
        nonlocal idle
        idle += 1

    async def collect() -> None:
        async for batch in store.tail(Cursor.start(16), block=0.1, on_idle=on_idle):
            assert len({e.partition for e in batch}) == 1  # one partition per batch
            got.extend(batch)
            if len(got) >= 64:
                return

    task = asyncio.create_task(collect())
    # the blocks end empty at least once before anything is appended
    await eventually(lambda: idle >= 1, timeout=20, what="an empty block")
    for i in range(64):
        await writer.append_one(message(project=f"p{i % 16}", thread_id="t", content=str(i)))
    await asyncio.wait_for(task, 20)
    assert len({e.id for e in got}) == 64
    for name in {e.project_name for e in got}:
        contents = [int(e.data["content"]) for e in got if e.project_name == name]
        assert contents == sorted(contents)  # per project (one partition) in log order


async def test_tail_across_partitions_survives_killed_connections(
    session_cluster: LocalCluster, store_factory: Callable[..., object], cluster_url: str
) -> None:
    store: EventStore = await store_factory(cluster_url, partitions=6)  # type: ignore[misc]
    got: list[RecordedEvent] = []

    async def collect() -> None:
        async for batch in store.tail(Cursor.start(6), block=0.2):
            got.extend(batch)
            if len(got) >= 60:
                return

    task = asyncio.create_task(collect())
    try:
        for round_ in range(3):
            for i in range(10):
                await store.append_one(message(project=f"p{i}", content=f"{round_}-{i}"))
            for node in session_cluster.live():
                with session_cluster.client(node) as admin:
                    for client in admin.client_list():
                        if "xread" in client.get("cmd", ""):
                            admin.client_kill_filter(_id=client["id"])
            for i in range(10):
                await store.append_one(message(project=f"p{i}", content=f"{round_}-gap-{i}"))
        await asyncio.wait_for(task, 30)
    finally:
        task.cancel()
    assert len({e.id for e in got}) == len(got) == 60


@pytest.mark.parametrize("fsync", [False, True], ids=["WAIT", "WAITAOF"])
async def test_replicated_ack_is_on_the_replica_when_answered(
    session_cluster: LocalCluster, store_factory: Callable[..., object], cluster_url: str,
    fsync: bool,
) -> None:
    store: EventStore = await store_factory(  # type: ignore[misc]
        cluster_url, partitions=4, ack="replicated", ack_replicas=1, ack_timeout=5.0,
        ack_fsync=fsync,
    )
    results = await asyncio.gather(
        *(store.append_one(message(project=f"p{i}", content=str(i))) for i in range(24))
    )
    assert {r.version for r in results} == {1}
    for p in range(4):
        key = store.keys.log(p)
        master = session_cluster.master_of(key)
        [replica] = session_cluster.replicas_of(master)
        expected = sum(1 for r in results if r.partition == p)
        assert _replica_xlen(session_cluster, replica, key) == expected


async def test_too_few_replicas_is_not_replicated_and_a_retry_is_safe(
    store_factory: Callable[..., object], cluster_url: str
) -> None:
    store: EventStore = await store_factory(  # type: ignore[misc]
        cluster_url, ack="replicated", ack_replicas=2, ack_timeout=0.2
    )
    event = message(event_id=uuid.uuid4())
    with pytest.raises(NotReplicated) as err:
        await store.append_one(event)
    assert err.value.status == 503 and err.value.retry_after >= 1
    assert err.value.acknowledged == 1 and err.value.required == 2
    assert "retry with the same event_id" in str(err.value).lower()
    with pytest.raises(NotReplicated):  # the retry is a duplicate, and still not replicated
        await store.append_one(event)
    [stored] = await store.read(0)  # written once, on the primary
    assert stored.id == event.id


async def test_replicated_ack_on_one_server_with_a_replica(
    valkey_factory: Callable[..., EmbeddedValkey], key_prefix: str
) -> None:
    primary = valkey_factory(port=0, extra_args=["--repl-diskless-sync", "yes",
                                                 "--repl-diskless-sync-delay", "0"])
    replica = valkey_factory(port=0, extra_args=["--replicaof", "127.0.0.1", str(primary.port)])

    def linked() -> bool:
        with redis.Redis(host="127.0.0.1", port=int(replica.port or 0)) as r:
            return bool(r.info("replication").get("master_link_status") == "up")

    await eventually(linked, what="the replica's link up")
    store = await EventStore.open(primary.url, prefix=key_prefix, ack="replicated",
                                  ack_replicas=1, ack_timeout=5.0)
    try:
        results = await asyncio.gather(*(store.append_one(message(content=str(i)))
                                         for i in range(20)))
        with redis.Redis(host="127.0.0.1", port=int(replica.port or 0)) as r:
            assert r.xlen(store.keys.log(0)) == 20
        assert sorted(r.version for r in results) == list(range(1, 21))
        # ack_fsync: the replica must have it in its AOF on disk (WAITAOF), not only in memory
        store.ack_fsync = True
        await store.append_one(message(content="on the replica's disk"))
        with redis.Redis(host="127.0.0.1", port=int(replica.port or 0)) as r:
            r.config_set("appendonly", "no")
        store.ack_timeout = 0.2
        with pytest.raises(NotReplicated, match="0 of 1 replicas"):
            await store.append_one(message(content="in memory only"))
        store.ack_fsync, store.ack_timeout = False, 5.0
        await store.append_one(message(content="in memory is enough for WAIT"))
        replica.stop()
        store.ack_timeout = 0.2
        with pytest.raises(NotReplicated, match="0 of 1 replicas"):
            await store.append_one(message(content="alone"))
        assert len(await store.read(0)) == 24  # on the primary; the client was told
    finally:
        await store.close()


async def test_settings_choose_the_cluster_and_the_ack_level(
    session_cluster: LocalCluster, cluster_url: str, key_prefix: str, tmp_path: Path
) -> None:
    from chatlog.eventstore.runtime import open_store
    from chatlog.settings import Settings

    settings = Settings(redis_url=cluster_url, partitions=4, key_prefix=key_prefix,
                        data_dir=tmp_path, ack="replicated", ack_replicas=1, ack_timeout=5.0)
    async with open_store(settings) as opened:
        store = opened.store
        assert store.is_cluster and opened.embedded is None
        assert (store.ack, store.ack_replicas, store.partitions) == ("replicated", 1, 4)
        result = await store.append_one(message(project="via-settings"))
        key = store.keys.log(result.partition)
        [replica] = session_cluster.replicas_of(session_cluster.master_of(key))
        assert _replica_xlen(session_cluster, replica, key) == 1


async def test_tail_raw_across_partitions_on_a_cluster(
    store_factory: Callable[..., object], cluster_url: str
) -> None:
    store: EventStore = await store_factory(cluster_url, partitions=8)  # type: ignore[misc]
    results = [await store.append_one(message(project=f"p{i}", content=str(i)))
               for i in range(24)]
    got: list[tuple[int, bytes, dict[bytes, bytes]]] = []
    async with asyncio.timeout(20):
        async for batch in store.tail_raw(Cursor.start(8), block=0.1):
            assert len({p for p, _, _ in batch}) == 1  # one partition per batch
            got.extend(batch)
            if len(got) >= len(results):
                break
    assert sorted(fields[b"i"].decode() for _, _, fields in got) == sorted(
        r.event_id for r in results)
    assert {(p, pos.decode()) for p, pos, _ in got} == {(r.partition, r.position) for r in results}


async def test_scan_and_log_info_on_a_cluster(
    store_factory: Callable[..., object], cluster_url: str
) -> None:
    store: EventStore = await store_factory(cluster_url, partitions=4)  # type: ignore[misc]
    results = [await store.append_one(message(project="one", content=str(i))) for i in range(5)]
    p = results[0].partition
    scanned = [e for c in [c async for c in store.scan_flat(p, chunk=2)] for e in c]
    assert scanned == await store.read_flat(p)
    assert [pos.decode() for pos, _ in scanned] == [r.position for r in results]
    info = await store.log_info(p, results[1].position)
    assert (info.length, info.head, info.next_position) == (5, results[-1].position,
                                                            results[2].position)
    assert (await store.placement())["partitions"].keys() == {"p0", "p1", "p2", "p3"}
