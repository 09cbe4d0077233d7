"""Erasure on a Redis Cluster with replicas: no master's or replica's files keep the text."""

from __future__ import annotations

import secrets

import pytest

from chatlog.erasure import Eraser
from chatlog.eventstore import EventStore
from chatlog.identity import normalize_project_id
from chatlog.testing import LocalCluster
from tests.erasure.test_erasure import files_holding
from tests.helpers import eventually, message


@pytest.mark.cluster
async def test_erasure_reaches_every_shard_and_replica(session_cluster: LocalCluster,
                                                       key_prefix: str) -> None:
    store = await EventStore.open(session_cluster.url, partitions=3, prefix=key_prefix)
    marker = secrets.token_hex(32)
    blog = normalize_project_id("Blog").key
    try:
        for i in range(3):
            await store.append_one(message("Blog", "t1", f"{i} {marker}"))
            await store.append_one(message("Blog", "t2", f"{i} keep"))
            await store.append_one(message("Shop", "s1", f"{i} shop"))
        base = session_cluster.base_dir
        await eventually(lambda: len(files_holding(base, marker)) >= 2, timeout=30,
                         what="the marker on a master and its replica")
        report = await Eraser(store).erase(blog, "Blog", "t1")
        assert report.state == "done" and report.events_erased["redis"] == 3
        assert report.aof_rewrites == len(session_cluster.live())  # masters and replicas
        assert files_holding(base, marker) == []
        # Every node's RDB file is accounted for; none is under a chatlog data dir.
        assert len(report.snapshots) == len(session_cluster.live())
        assert not any(n["removed"] for n in report.snapshots)
        left = await store.read_aggregate(blog, "thread", "t2")
        assert [e.data["content"] for e in left] == ["0 keep", "1 keep", "2 keep"]
    finally:
        await store.close()
