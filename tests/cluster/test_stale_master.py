"""The stale master: appends a master runs but cannot replicate are never observed downstream.

Issue 19's scenario with real processes: two ``chatlog serve`` nodes (HTTP,
projector, orchestrator, SSE) on a 3-master cluster with one replica per master,
``ack=replicated``, 4 partitions, writers on both nodes appending over HTTP with
client ``event_id``s (retrying 503/504 with the same id) and an SSE subscriber
on each node. The fault hook makes the race certain instead of lucky, by pid:
the replica of partition 0's master is stopped (SIGSTOP) and the master drops
the replication link (``CLIENT KILL TYPE replica``), so the master runs appends
that reach no replica and whose WAIT fails; then the master is stopped, the replica resumed and
promoted (``CLUSTER FAILOVER TAKEOVER``), and the old master resumed: it comes
back as a replica and loses those entries (as a master stopped past the node
timeout does). The clients' retries land the same events at new positions.

Afterwards: every acknowledged append is in the log exactly once with
contiguous versions; both nodes' read models equal each other and a fresh
rebuild; no row and no SSE event describes an event the log lacks; ``/readyz``
is 200 on both.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from chatlog.eventstore import EventStore
from chatlog.identity import normalize_project_id
from chatlog.projections.rebuild import build
from chatlog.projections.registry import default_projections
from chatlog.testing import LocalCluster
from tests.helpers import eventually, message
from tests.http.serving import Served
from tests.projections._util import dump

pytestmark = [pytest.mark.cluster]

PARTITIONS = 4
WRITERS_PER_NODE = 3
#: The whole scenario, from forming the cluster to the last check (seconds).
BOUND = 100


def project_in(partition: int) -> str:
    """A project name whose events live in ``partition``."""
    from chatlog.eventstore.keys import partition_of

    for i in range(1000):
        name = f"stale-{i}"
        if partition_of(normalize_project_id(name).key, PARTITIONS) == partition:
            return name
    raise AssertionError("no project name maps to that partition")


class Node:
    """One ``chatlog serve`` process and an SSE subscriber on it."""

    def __init__(self, cluster: LocalCluster, prefix: str, data_dir: Path) -> None:
        self.path = data_dir / "readmodel.sqlite"
        self.served = Served(
            data_dir, CHATLOG_REDIS_URL=cluster.url, CHATLOG_KEY_PREFIX=prefix,
            CHATLOG_PARTITIONS=str(PARTITIONS), CHATLOG_ACK="replicated",
            CHATLOG_ACK_REPLICAS="1", CHATLOG_ACK_TIMEOUT="0.5", CHATLOG_OUTCOME_TIMEOUT="1",
            CHATLOG_SSE_KEEPALIVE="0.5")
        self.url = self.served.url
        self.seen: list[dict[str, Any]] = []

    async def follow(self, session: aiohttp.ClientSession) -> None:
        """Subscribe to SSE and record every event; resume from the last id if cut."""
        last: str | None = None
        while True:
            headers = {"Last-Event-ID": last} if last else {}
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{self.url}/v1/events/stream", headers=headers,
                                       timeout=aiohttp.ClientTimeout(total=None)) as resp:
                    data: list[str] = []
                    async for raw in resp.content:
                        line = raw.decode().rstrip("\n")
                        if line.startswith("id: "):
                            last = line[4:]
                        elif line.startswith("data: "):
                            data.append(line[6:])
                        elif line == "" and data:
                            self.seen.append(json.loads("\n".join(data)))
                            data = []
            await asyncio.sleep(0.1)  # cut: reconnect (pacing, not ordering)


class Writers:
    """Clients appending with their own ``event_id``s, retrying one until it is answered."""

    def __init__(self, session: aiohttp.ClientSession, names: list[str]) -> None:
        self.session = session
        self.names = names
        self.acked: dict[str, dict[str, Any]] = {}
        self.refused = 0
        self.stop = asyncio.Event()

    async def append(self, url: str, name: str, thread: str, content: str,
                     event_id: str) -> tuple[int, dict[str, Any]]:
        body = {"thread_id": thread, "role": "user", "content": content, "event_id": event_id}
        try:
            async with self.session.post(f"{url}/v1/projects/{name}/messages", json=body,
                                         timeout=aiohttp.ClientTimeout(total=10)) as resp:
                return resp.status, await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError):
            return 0, {}

    async def until_acked(self, url: str, name: str, thread: str, content: str,
                          event_id: str) -> dict[str, Any]:
        while True:
            status, doc = await self.append(url, name, thread, content, event_id)
            if status in (200, 201):
                self.acked[event_id] = doc
                return doc
            assert status in (0, 503, 504), (status, doc)
            self.refused += 1
            await asyncio.sleep(0.05)  # client retry backoff

    async def writer(self, url: str, k: int) -> None:
        i = 0
        while not self.stop.is_set():
            name = self.names[(k + i) % len(self.names)]
            await self.until_acked(url, name, f"w{k}", f"m{i}", str(uuid.uuid4()))
            i += 1


def message_ids(path: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {r[0] for r in conn.execute("SELECT message_id FROM messages")}
    finally:
        conn.close()


@pytest.mark.timeout(BOUND + 30)
async def test_a_stale_masters_writes_are_never_observed(
    cluster_factory: Callable[..., LocalCluster], key_prefix: str, tmp_path: Path
) -> None:
    cluster = cluster_factory(masters=3, replicas=1, node_timeout=1000)
    nodes: list[Node] = []
    stopped: list[int] = []
    tasks: list[asyncio.Task[Any]] = []
    session = aiohttp.ClientSession()
    store = await EventStore.open(cluster.url, partitions=PARTITIONS, prefix=key_prefix)
    try:
        async with asyncio.timeout(BOUND):
            for name in ("a", "b"):
                nodes.append(await asyncio.to_thread(Node, cluster, key_prefix,
                                                     tmp_path / name))
            a, b = nodes
            tasks += [asyncio.create_task(n.follow(session)) for n in nodes]
            names = [project_in(p) for p in range(PARTITIONS)]
            writers = Writers(session, names)
            tasks += [asyncio.create_task(writers.writer(n.url, k + 10 * j))
                      for j, n in enumerate(nodes) for k in range(WRITERS_PER_NODE)]
            await eventually(lambda: len(writers.acked) >= 40, timeout=30,
                             what="the writers to be under way")

            master = cluster.master_of(store.keys.log(0))
            [replica] = cluster.replicas_of(master)
            assert master.process is not None and replica.process is not None

            # 1. The replica stops and the master drops its link (a stopped replica's
            #    kernel would still take in the replication stream): the master runs
            #    appends that reach no replica, and their WAIT fails (503/504).
            os.kill(replica.process.pid, signal.SIGSTOP)
            stopped.append(replica.process.pid)
            await asyncio.to_thread(cluster.command, master, "CLIENT", "KILL", "TYPE", "replica")
            lost = str(uuid.uuid4())
            status, doc = await writers.append(a.url, names[0], "lost", "run by the stale "
                                               "master", lost)
            assert status in (503, 504), (status, doc)
            on_master = await asyncio.to_thread(
                cluster.command, master, "XRANGE", store.keys.log(0), "-", "+")
            stale_at = [str(e[0]) for e in on_master if lost in json.dumps(e, default=str)]
            assert stale_at, "the fault hook did not put the entry on the master"

            # A barrier on another master's partition: both nodes have run past the fault.
            other = next(p for p in range(PARTITIONS)
                         if cluster.master_of(store.keys.log(p)).port != master.port)
            barrier = await writers.until_acked(b.url, names[other], "barrier", "barrier",
                                                str(uuid.uuid4()))
            for node in nodes:
                await eventually(lambda n=node: barrier["message_id"] in message_ids(n.path),
                                 timeout=20, what="the barrier to be applied")
                assert lost not in message_ids(node.path)
                assert all(ev["id"] != lost for ev in node.seen)

            # 2. Failover while the old master is stopped; it comes back as a replica
            #    (its unreplicated entries are gone with its old data set).
            os.kill(master.process.pid, signal.SIGSTOP)
            stopped.append(master.process.pid)
            os.kill(replica.process.pid, signal.SIGCONT)
            stopped.remove(replica.process.pid)
            await asyncio.to_thread(cluster.command, replica, "CLUSTER", "FAILOVER",
                                    "TAKEOVER")
            await eventually(lambda: cluster.command(replica, "ROLE")[0] == "master",
                             timeout=20, what="the replica to take over")
            os.kill(master.process.pid, signal.SIGCONT)
            stopped.remove(master.process.pid)
            await asyncio.to_thread(cluster.wait_ok, 30)

            # 3. The client retries with the same id: a new position on the new master.
            again = await writers.until_acked(a.url, names[0], "lost", "run by the stale "
                                              "master", lost)
            assert again["position"] not in stale_at
            settled = len(writers.acked)
            await eventually(lambda: len(writers.acked) >= settled + 20, timeout=30,
                             what="the writers to go on after the failover")
            writers.stop.set()
            await asyncio.gather(*tasks[2:])  # each writer finishes its append in flight
            last = await writers.until_acked(b.url, names[0], "lost", "after the failover",
                                             str(uuid.uuid4()))

            # 4. The log: every acknowledged append once, versions contiguous per thread.
            log = [e for p in range(PARTITIONS) for e in await store.read(p, limit=100_000)]
            counts = Counter(str(e.id) for e in log)
            wrong = {i: (counts[i], doc) for i, doc in writers.acked.items() if counts[i] != 1}
            assert not wrong, f"acknowledged appends missing from the log or in it twice: {wrong}"
            versions: dict[tuple[str, str], list[int]] = {}
            for e in log:
                versions.setdefault((str(e.project), e.aggregate_id), []).append(e.version)
            assert all(v == list(range(1, len(v) + 1)) for v in versions.values())
            in_log = {(e.partition, e.position, str(e.id)) for e in log}
            ids_in_log = {str(e.id) for e in log}

            # 5. Both nodes settle on a fresh rebuild; nothing downstream saw a lost entry.
            fresh = tmp_path / "fresh.sqlite"
            await build(store, fresh, default_projections())
            expected = dump(fresh)
            for node in nodes:
                await eventually(lambda n=node: dump(n.path) == expected, timeout=30,
                                 what="each read model to equal a fresh rebuild")
                assert message_ids(node.path) <= ids_in_log
                async with session.get(f"{node.url}/readyz") as resp:
                    assert resp.status == 200, await resp.text()
                await eventually(lambda n=node: any(ev["id"] == last["message_id"]
                                                    for ev in n.seen),
                                 timeout=20, what="the SSE subscriber to get the last event")
                delivered = {(ev["partition"], ev["position"], ev["id"]) for ev in node.seen}
                assert delivered <= in_log, \
                    f"SSE delivered events the log lacks: {delivered - in_log}"
            assert dump(a.path) == dump(b.path)
            assert writers.refused > 0  # the fault was felt by the clients
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await session.close()
        await store.close()
        for node in nodes:
            await asyncio.to_thread(node.served.stop)


async def test_a_duplicate_is_acknowledged_only_where_its_original_was_replicated(
    cluster_factory: Callable[..., LocalCluster], key_prefix: str
) -> None:
    """A retry finds its event on a stale primary (a duplicate reply): it is acknowledged
    only if that primary's replicas have it, even when the store's view of the cluster
    changes between round trips (a failover in progress). The fence that confirms a
    duplicate used to be a second round trip, routed afresh: on the new view it was
    confirmed by another node, and the serve-process scenario above then lost an
    acknowledged append (answered "duplicate", gone after the failover)."""
    from chatlog.errors import NotReplicated

    cluster = cluster_factory(masters=3, replicas=1, node_timeout=30_000)
    store = await EventStore.open(cluster.url, partitions=PARTITIONS, prefix=key_prefix,
                                  ack="replicated", ack_replicas=1, ack_timeout=0.5,
                                  outcome_timeout=0.5)
    stopped: list[int] = []
    try:
        name = project_in(0)
        await store.append_one(message(name, "t", "warm"))
        master = cluster.master_of(store.keys.log(0))
        [replica] = cluster.replicas_of(master)
        assert replica.process is not None
        os.kill(replica.process.pid, signal.SIGSTOP)
        stopped.append(replica.process.pid)
        await asyncio.to_thread(cluster.command, master, "CLIENT", "KILL", "TYPE", "replica")
        lost = message(name, "t", "only on the stale primary", event_id=uuid.uuid4())
        with pytest.raises(NotReplicated):
            await store.append_one(lost)

        # From now on the store sees the partition on another (healthy) primary.
        healthy = next(n for n in cluster.nodes if n.port != master.port
                       and cluster.command(n, "ROLE")[0] == "master")
        node = store.redis.get_node(host="127.0.0.1", port=healthy.port)
        assert node is not None
        topology: Any = store._topology
        real = topology.node_groups
        calls = 0

        async def moving(keys: Any) -> list[tuple[Any, list[int]]]:
            nonlocal calls
            calls += 1
            groups: list[tuple[Any, list[int]]] = await real(keys)
            return groups if calls == 1 else [(node, idx) for _, idx in groups]

        topology.node_groups = moving
        with pytest.raises(NotReplicated):
            await store.append_one(lost)  # the retry: a duplicate on the stale primary
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        await store.close()

