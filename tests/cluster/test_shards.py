"""Shards are independent: a stalled master delays only the appends to its own partitions.

Group commits are per shard, so with one master paused (SIGSTOP, shorter than the
node timeout: no failover) an append to it stays in flight while appends to the
partitions of the other masters are answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable

import pytest

from chatlog.eventstore import EventStore
from chatlog.identity import normalize_project_id
from chatlog.testing import LocalCluster
from tests.helpers import message

pytestmark = [pytest.mark.cluster]

PARTITIONS = 16


def projects_by_partition(store: EventStore) -> dict[int, str]:
    names: dict[int, str] = {}
    for i in range(10_000):
        name = f"shard-{i}"
        names.setdefault(store.partition_of(normalize_project_id(name).key), name)
        if len(names) == PARTITIONS:
            return names
    raise AssertionError("some partition has no project name")


@pytest.mark.parametrize("ack", ["local", "replicated"])
async def test_a_paused_master_stalls_only_its_own_partitions(
    cluster_factory: Callable[..., LocalCluster], key_prefix: str, ack: str
) -> None:
    cluster = cluster_factory(masters=3, replicas=1 if ack == "replicated" else 0,
                              node_timeout=30_000)
    store = await EventStore.open(cluster.url, partitions=PARTITIONS, prefix=key_prefix,
                                  ack=ack, ack_replicas=1, ack_timeout=20.0)
    paused_pid = None
    stalled: asyncio.Task[object] | None = None
    try:
        names = projects_by_partition(store)
        for name in names.values():  # every shard answers before the pause
            await store.append_one(message(name, "t", "warm"))
        paused = cluster.master_of(store.keys.log(0))
        mine = [p for p in range(PARTITIONS)
                if cluster.master_of(store.keys.log(p)).port == paused.port]
        others = [p for p in range(PARTITIONS) if p not in mine]
        assert others, "every partition is on the paused master"
        assert paused.process is not None
        paused_pid = paused.process.pid
        os.kill(paused_pid, signal.SIGSTOP)

        # An append to the paused shard, in flight first (and appends queued behind it).
        stalled = asyncio.create_task(store.append_one(message(names[0], "t", "stalled")))
        queued = [asyncio.create_task(store.append_one(message(names[p], "t", "queued")))
                  for p in mine]
        await asyncio.sleep(0)  # they are sent (or queued) before the others arrive
        appends = [store.append_one(message(names[p], "t", f"m{k}"))
                   for k in range(5) for p in others]
        healthy = asyncio.gather(*appends)
        done, _ = await asyncio.wait([stalled, healthy], return_when=asyncio.FIRST_COMPLETED)
        assert healthy in done, "appends to healthy shards waited for the paused one"
        assert not stalled.done()
        results = healthy.result()
        assert len(results) == 5 * len(others)
        assert {r.partition for r in results} == set(others)

        os.kill(paused_pid, signal.SIGCONT)
        paused_pid = None
        # The paused shard's appends are answered once it is back.
        await stalled
        await asyncio.gather(*queued)
    finally:
        if paused_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(paused_pid, signal.SIGCONT)
        if stalled is not None and not stalled.done():
            stalled.cancel()
        await store.close()
