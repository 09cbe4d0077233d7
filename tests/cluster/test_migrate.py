"""Moving a deployment: copy the log from one server (P=4) to the cluster (P=16)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from chatlog.errors import EventIdReused, PartitionMismatch
from chatlog.events import NewEvent, RecordedEvent
from chatlog.eventstore import Cursor, EmbeddedValkey, EventStore
from chatlog.eventstore.migration import MigrationError, MigrationProgress, migrate
from chatlog.identity import normalize_project_id
from tests.helpers import message

pytestmark = pytest.mark.cluster


async def _all(store: EventStore) -> list[RecordedEvent]:
    events, _ = await store.read_cursor(Cursor.start(store.partitions), limit=1_000_000)
    return events


async def _fill(store: EventStore, n: int, offset: int = 0) -> set[uuid.UUID]:
    """``n`` messages over 12 projects and 30 threads; every third with a client id."""
    client_ids = set()
    for i in range(offset, offset + n):
        eid = uuid.uuid4() if i % 3 == 0 else None
        await store.append_one(message(project=f"project-{i % 12}", thread_id=f"t{i % 30}",
                                       content=str(i), event_id=eid))
        if eid:
            client_ids.add(eid)
    return client_ids


def _by_aggregate(events: list[RecordedEvent]) -> dict[tuple[object, str, str], list[object]]:
    out: dict[tuple[object, str, str], list[object]] = {}
    for e in events:
        out.setdefault((e.project, e.aggregate_type, e.aggregate_id), []).append(
            (e.id, e.version, e.type, e.data, e.time, e.project_name))
    return out


async def test_migrate_one_server_to_cluster_keeps_everything_and_reruns_idempotently(
    store_factory: Callable[..., object], cluster_url: str
) -> None:
    source: EventStore = await store_factory(partitions=4)  # type: ignore[misc]
    target: EventStore = await store_factory(cluster_url, partitions=16)  # type: ignore[misc]
    client_ids = await _fill(source, 240)
    await source.append_one(NewEvent(type="future.thing", project=uuid.uuid4(),
                                     project_name="x", aggregate_type="thread",
                                     aggregate_id="t", data={"k": 1}))
    seen: list[int] = []

    def progress(p: MigrationProgress) -> None:
        seen.append(p.done)

    result = await migrate(source, target, batch=50, on_progress=progress)
    assert (result.total, result.copied, result.skipped) == (241, 241, 0)
    assert seen == sorted(seen) and seen[-1] == 241 and len(seen) > 1
    src, dst = await _all(source), await _all(target)
    assert len(dst) == 241 and len({e.partition for e in dst}) > 4
    # ids, versions, types, bodies, times and the order of every aggregate are kept
    assert _by_aggregate(dst) == _by_aggregate(src)
    key = normalize_project_id("project-5").key
    assert await target.aggregate_version(key, "thread", "t5") == await source.aggregate_version(
        key, "thread", "t5")
    assert [e.id for e in await target.read_aggregate(key, "thread", "t5")] == [
        e.id for e in await source.read_aggregate(key, "thread", "t5")]

    # a client retrying a pre-migration append against the target adds nothing; the
    # remembered digest is copied too: the same id with other content is refused
    old = next(e for e in src if e.id in client_ids)
    retry = message(project=old.project_name, thread_id=old.aggregate_id,
                    content=old.data["content"], event_id=old.id)
    assert (await target.append_one(retry)).duplicate
    with pytest.raises(EventIdReused):
        await target.append_one(message(project=old.project_name, thread_id=old.aggregate_id,
                                        content="other", event_id=old.id))

    # rerun: nothing copied twice; then new source events are copied on the next run
    again = await migrate(source, target)
    assert (again.copied, again.skipped) == (0, 241)
    await _fill(source, 30, offset=1000)
    resumed = await migrate(source, target)
    assert (resumed.copied, resumed.skipped) == (30, 241)
    assert _by_aggregate(await _all(target)) == _by_aggregate(await _all(source))
    # the target is a working log: appends continue the copied versions
    nxt = await target.append_one(message(project="project-5", thread_id="t5"))
    assert nxt.version == await source.aggregate_version(key, "thread", "t5") + 1


async def test_migrate_refuses_a_target_with_other_events(
    store_factory: Callable[..., object], cluster_url: str
) -> None:
    source: EventStore = await store_factory(partitions=1)  # type: ignore[misc]
    target: EventStore = await store_factory(cluster_url, partitions=2)  # type: ignore[misc]
    await source.append([message(content="a"), message(content="b")])
    await target.append_one(message(content="someone else"))
    with pytest.raises(MigrationError, match="another event at version 1"):
        await migrate(source, target)
    empty: EventStore = await store_factory(cluster_url, partitions=2,  # type: ignore[misc]
                                            prefix=f"o{uuid.uuid4().hex[:8]}")
    await source.append_one(message(thread_id="t9"))
    second = await source.append_one(message(thread_id="t9"))
    await source.trim(0, second.position)  # the source lost t9's first event
    with pytest.raises(MigrationError, match="source was trimmed"):
        await migrate(source, empty)
    with pytest.raises(PartitionMismatch):
        await store_factory(cluster_url, partitions=8)


def test_chatlog_migrate_command(
    valkey_factory: Callable[..., EmbeddedValkey], cluster_url: str, key_prefix: str,
    tmp_path: Path,
) -> None:
    server = valkey_factory()
    env = {**os.environ, "CHATLOG_REDIS_URL": server.url, "CHATLOG_KEY_PREFIX": key_prefix,
           "CHATLOG_DATA_DIR": str(tmp_path / "data")}

    def chatlog(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "chatlog", *args], env=env,
                              capture_output=True, text=True, timeout=60)

    for i in range(5):
        assert chatlog("append", f"Project-{i}", f"hello {i}").returncode == 0
    first = chatlog("migrate", "--to", cluster_url, "--to-partitions", "16")
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert (doc["events"], doc["copied"], doc["skipped"], doc["partitions"]) == (5, 5, 0, 16)
    assert "5/5 events" in first.stderr  # progress
    again = json.loads(chatlog("migrate", "--to", cluster_url, "--to-partitions", "16",
                               "--quiet").stdout)
    assert (again["copied"], again["skipped"]) == (0, 5)
    status = chatlog("--redis-url", cluster_url, "--partitions", "16", "status", "--json")
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert doc["length"] == 5
    assert len(doc["cluster"]["masters"]) == 3  # where each partition lives now
    assert set(doc["cluster"]["partitions"].values()) == set(doc["cluster"]["masters"])
    assert len(doc["cluster"]["partitions"]) == 16
    bad = chatlog("migrate", "--to", "redis+cluster://", "--quiet")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "names no node" in bad.stderr
