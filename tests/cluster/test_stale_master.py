"""The stale master: appends a master runs but cannot replicate are never observed downstream.

Two serving nodes (an app each: projector, orchestrator, SSE) on a 3-master cluster
with one replica per master, ``ack=replicated``. The fault hook makes the race certain
instead of lucky: the replica of partition 0's master is stopped (SIGSTOP), so the
master runs an append whose WAIT fails (the client gets 503); then the replica takes
over while the old master is stopped, and the old master comes back as its replica,
losing that entry (as a master stopped past the node timeout does). The client's retry
lands the same event at a new position. Afterwards: both nodes' read models equal each
other and a fresh rebuild, no row and no SSE event describes an event the log lacks,
and /readyz is 200 on both.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from chatlog.errors import ChatlogError
from chatlog.eventstore import EventStore
from chatlog.http import create_app
from chatlog.http.app import build_services
from chatlog.projections.rebuild import build
from chatlog.projections.registry import default_projections
from chatlog.settings import Settings
from chatlog.testing import LocalCluster
from tests.helpers import eventually, message
from tests.projections._util import dump

pytestmark = [pytest.mark.cluster]

PARTITIONS = 4


def project_in(store: EventStore, partition: int) -> str:
    """A project name whose events live in ``partition``."""
    from chatlog.identity import normalize_project_id

    for i in range(1000):
        name = f"stale-{i}"
        if store.partition_of(normalize_project_id(name).key) == partition:
            return name
    raise AssertionError("no project name maps to that partition")


class Node:
    """One serving node: store, app (projector, orchestrator, SSE), one SSE subscriber."""

    def __init__(self, store: EventStore, client: TestClient[Any, Any], path: Path) -> None:
        self.store = store
        self.client = client
        self.path = path
        self.seen: list[dict[str, Any]] = []
        self.reader: asyncio.Task[None] | None = None

    async def subscribe(self) -> None:
        resp = await self.client.get("/v1/events/stream")
        assert resp.status == 200

        async def read() -> None:
            data: list[str] = []
            while True:
                line = (await resp.content.readline()).decode()
                if not line:
                    return
                line = line.rstrip("\n")
                if line == "" and data:
                    self.seen.append(json.loads("\n".join(data)))
                    data = []
                elif line.startswith("data: "):
                    data.append(line[6:])

        self.reader = asyncio.create_task(read())

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.reader
        await self.client.close()
        await self.store.close()


async def open_node(cluster: LocalCluster, prefix: str, data_dir: Path) -> Node:
    settings = Settings(redis_url=cluster.url, data_dir=data_dir, key_prefix=prefix,
                        partitions=PARTITIONS, ack="replicated", ack_replicas=1,
                        ack_timeout=0.5, sse_keepalive=0.5)
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    store = await EventStore.open(cluster.url, partitions=PARTITIONS, prefix=prefix,
                                  ack="replicated", ack_replicas=1, ack_timeout=0.5)
    services = build_services(settings, store)
    client = TestClient(TestServer(create_app(settings, store, services=services)))
    await client.start_server()
    node = Node(store, client, settings.sqlite_path)
    await node.subscribe()
    return node


def message_ids(path: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {r[0] for r in conn.execute("SELECT message_id FROM messages")}
    finally:
        conn.close()


async def append_retrying(store: EventStore, event: Any, timeout: float = 30.0) -> Any:
    """Append ``event`` until it is acknowledged (a client retrying with its event id)."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                return await store.append_one(event)
            except ChatlogError:
                await asyncio.sleep(0.1)


async def test_a_stale_masters_writes_are_never_observed(
    cluster_factory: Callable[..., LocalCluster], key_prefix: str, tmp_path: Path
) -> None:
    cluster = cluster_factory(masters=3, replicas=1, node_timeout=1000)
    a = await open_node(cluster, key_prefix, tmp_path / "a")
    b = await open_node(cluster, key_prefix, tmp_path / "b")
    stopped: list[int] = []
    try:
        names = [project_in(a.store, p) for p in range(PARTITIONS)]
        for i, name in enumerate(names * 3):
            await a.store.append_one(message(name, "t", f"warm {i}"))
        master = cluster.master_of(a.store.keys.log(0))
        [replica] = cluster.replicas_of(master)
        assert master.process is not None and replica.process is not None

        # 1. The replica stops: the master runs the append, its WAIT fails (503).
        os.kill(replica.process.pid, signal.SIGSTOP)
        stopped.append(replica.process.pid)
        lost = message(names[0], "t", "run by the stale master", event_id=uuid.uuid4())
        with pytest.raises(ChatlogError):
            await a.store.append_one(lost)
        on_master = await asyncio.to_thread(
            cluster.command, master, "XRANGE", a.store.keys.log(0), "-", "+")
        assert str(lost.id) in json.dumps(on_master, default=str), \
            "the fault hook did not put the entry on the master"

        # A barrier on another partition: both nodes' tails have run past the fault.
        other = next(p for p in range(PARTITIONS)
                     if cluster.master_of(a.store.keys.log(p)).port != master.port)
        barrier = await a.store.append_one(message(names[other], "t", "barrier"))
        for node in (a, b):
            await eventually(lambda n=node: str(barrier.event_id) in message_ids(n.path),
                             timeout=20, what="the barrier to be applied")
            assert str(lost.id) not in message_ids(node.path)
            assert all(ev["id"] != str(lost.id) for ev in node.seen)

        # 2. Failover while the old master is stopped; it comes back as a replica
        #    (its unreplicated entry is gone with its old data set).
        os.kill(master.process.pid, signal.SIGSTOP)
        stopped.append(master.process.pid)
        os.kill(replica.process.pid, signal.SIGCONT)
        stopped.remove(replica.process.pid)
        await asyncio.to_thread(cluster.command, replica, "CLUSTER", "FAILOVER", "TAKEOVER")
        await eventually(lambda: cluster.command(replica, "ROLE")[0] == "master", timeout=20,
                         what="the replica to take over")
        os.kill(master.process.pid, signal.SIGCONT)
        stopped.remove(master.process.pid)
        await asyncio.to_thread(cluster.wait_ok, 30)

        # 3. The client retries with the same id: a new position on the new master.
        again = await append_retrying(a.store, lost)
        after = await append_retrying(b.store, message(names[0], "t", "after the failover"))

        # 4. Settle: both nodes reach the head; compare with the log and a fresh rebuild.
        log = {p: await a.store.read(p, limit=10_000) for p in range(PARTITIONS)}
        in_log = {(e.partition, e.position, str(e.id)) for es in log.values() for e in es}
        assert (0, again.position, str(lost.id)) in in_log
        fresh = tmp_path / "fresh.sqlite"
        await build(a.store, fresh, default_projections())
        expected = dump(fresh)
        for node in (a, b):
            await eventually(lambda n=node: str(after.event_id) in message_ids(n.path),
                             timeout=30, what="the nodes to apply the events after the failover")
            await eventually(lambda n=node: dump(n.path) == expected, timeout=30,
                             what="each read model to equal a fresh rebuild")
            assert message_ids(node.path) <= {i for _, _, i in in_log}
            resp = await node.client.get("/readyz")
            assert resp.status == 200, await resp.text()
            await eventually(lambda n=node: any(ev["id"] == str(after.event_id)
                                                for ev in n.seen),
                             timeout=20, what="the SSE subscriber to receive the last event")
            delivered = {(ev["partition"], ev["position"], ev["id"]) for ev in node.seen}
            assert delivered <= in_log, f"SSE delivered events the log lacks: {delivered - in_log}"
        assert dump(a.path) == dump(b.path)
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        await a.close()
        await b.close()
