"""A projector that heals: when the log loses events the read model applied (a failover
promoted a replica that never got them, or a restore from an older snapshot), the
projector repairs its read model by itself; a batch that keeps failing is reported.

The fault hook makes the race certain: the partition's keys are snapshotted, events are
appended and applied, then the snapshot is restored (what the promoted replica holds)
and the clients' retries land the same event ids at new positions and versions.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from chatlog.events import RecordedEvent
from chatlog.eventstore import EventStore
from chatlog.projections.conversations import ConversationsProjection
from chatlog.projections.projector import Projector
from chatlog.projections.rebuild import build
from tests.helpers import eventually, message
from tests.projections._util import dump

Snapshot = list[tuple[str, int, bytes]]


async def snapshot(store: EventStore, partition: int) -> Snapshot:
    """Every key of ``partition`` as DUMP gives it (with its time to live)."""
    redis: Any = store.redis
    saved = []
    async for key in redis.scan_iter(match=f"{store.keys.tag(partition)}:*"):
        data = await redis.dump(key)
        if data is not None:
            saved.append((key, max(await redis.pttl(key), 0), data))
    return saved


async def fail_over_to(store: EventStore, partition: int, saved: Snapshot) -> None:
    """Make ``partition`` what ``saved`` was: what a replica promoted then would hold."""
    redis: Any = store.redis
    keys = [k async for k in redis.scan_iter(match=f"{store.keys.tag(partition)}:*")]
    if keys:
        await redis.delete(*keys)
    for key, ttl, data in saved:
        await redis.restore(key, ttl, data, replace=True)


async def fresh_build(store: EventStore, path: Path) -> dict[str, list[tuple[Any, ...]]]:
    await build(store, path, [ConversationsProjection()])
    return dump(path)


def message_ids(path: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {r[0] for r in conn.execute("SELECT message_id FROM messages")}
    finally:
        conn.close()


@pytest.mark.parametrize("retried", [True, False], ids=["retried-at-new-versions", "lost"])
async def test_projector_repairs_after_the_log_loses_applied_events(
    store: EventStore, model_path: Path, tmp_path: Path, retried: bool
) -> None:
    for i in range(3):
        await store.append_one(message("Heal", "thread-1", f"kept {i}"))
    async with Projector(store, model_path, [ConversationsProjection()], block=0.1) as pj:
        saved = await snapshot(store, 0)
        ids = [uuid.uuid4(), uuid.uuid4()]
        stale = [await store.append_one(message("Heal", "thread-1", f"stale {i}", event_id=e))
                 for i, e in enumerate(ids)]
        await pj.wait_for(0, stale[-1].position, 10)
        assert {str(e) for e in ids} <= message_ids(model_path)

        await fail_over_to(store, 0, saved)
        if retried:
            # Another client's write first, then the retries: the same ids at new
            # positions, one version later than the read model has them.
            await store.append_one(message("Heal", "thread-1", "written on the new primary"))
            again = [await store.append_one(message("Heal", "thread-1", f"stale {i}",
                                                    event_id=e))
                     for i, e in enumerate(ids)]
            assert [r.version for r in again] == [s.version + 1 for s in stale]

        in_log = {str(e.id) for e in await store.read(0)}
        expected = await fresh_build(store, tmp_path / "fresh.sqlite")

        await eventually(lambda: dump(model_path) == expected, timeout=30,
                         what="the read model to equal a fresh rebuild of the log")
        assert message_ids(model_path) <= in_log
        await eventually(lambda: pj.repairs >= 1 and pj.problem is None, timeout=10,
                         what="the projector to report its repair done")
        assert pj.running

        # And it keeps following the log afterwards.
        after = await store.append_one(message("Heal", "thread-1", "after the repair"))
        await pj.wait_for(0, after.position, 10)
        assert str(after.event_id) in message_ids(model_path)


class _Failing:
    """A projection that cannot apply one event (a bug, a full disk, a bad row)."""

    name = "failing"
    event_types = frozenset({"message.appended"})

    def create_schema(self, conn: sqlite3.Connection) -> None:
        return None

    def create_indexes(self, conn: sqlite3.Connection) -> None:
        return None

    def apply(self, conn: sqlite3.Connection, events: Sequence[RecordedEvent]) -> None:
        for ev in events:
            if ev.data.get("content") == "poison":
                raise sqlite3.IntegrityError("cannot apply the poison message")


async def test_a_batch_that_keeps_failing_is_reported(store: EventStore, model_path: Path,
                                                      tmp_path: Path) -> None:
    """/readyz says why (503), /metrics counts it, and the projector keeps running."""
    from aiohttp.test_utils import TestClient, TestServer

    from chatlog.http import create_app
    from chatlog.http.app import build_services
    from chatlog.settings import Settings

    await store.append_one(message("Poison", "thread-1", "fine"))
    settings = Settings(redis_url=store.url, key_prefix=store.keys.prefix, data_dir=tmp_path)
    services = build_services(settings, store)
    pj = Projector(store, model_path, [ConversationsProjection(), _Failing()], block=0.1,
                   retry_delay=0.01, heal_after=2)
    services.projector = pj
    app = create_app(settings, store, services=services, manage_services=False)
    try:
        async with pj, TestClient(TestServer(app)) as client:
            await store.append_one(message("Poison", "thread-1", "poison"))
            await eventually(lambda: pj.failures_total >= 3, timeout=30,
                             what="the failing batch to be counted")
            assert pj.running
            resp = await client.get("/readyz")
            assert resp.status == 503
            doc = await resp.json()
            assert "poison" in doc["projection"]["problem"]
            assert doc["projection"]["batch_failures"] >= 3
            text = await (await client.get("/metrics")).text()
            line = next(x for x in text.splitlines()
                        if x.startswith("chatlog_projector_batch_failures_total"))
            assert float(line.split()[-1]) >= 3
    finally:
        services.read_model.close()


async def test_an_entry_deleted_on_purpose_is_not_a_lost_one(store: EventStore,
                                                              model_path: Path) -> None:
    """XDEL (the integrations' deletes) and trimming remove entries on purpose: no repair."""
    for i in range(3):
        await store.append_one(message("Deleted", "thread-1", f"m{i}"))
    async with Projector(store, model_path, [ConversationsProjection()], block=0.1) as pj:
        last = await store.append_one(message("Deleted", "thread-1", "deleted later"))
        await pj.wait_for(0, last.position, 10)
        assert await store.missing(pj.checkpoint) == []
        redis: Any = store.redis
        await redis.xdel(store.keys.log(0), last.position)
        assert await store.missing(pj.checkpoint) == []
        after = await store.append_one(message("Deleted", "thread-1", "after"))
        await pj.wait_for(0, after.position, 10)
        assert pj.repairs == 0


async def test_a_checkpoint_the_archiver_sealed_is_not_a_lost_one(
    redis_url: str, key_prefix: str, model_path: Path, tmp_path: Path
) -> None:
    """The archiver seals events and trims them from Redis: a projector whose checkpoint is
    one of them (it was stopped, or lagged a whole hot window) finds it in the archive, and
    repairs nothing (it used to refold or rebuild the read model at every such start)."""
    from chatlog.eventstore.archive import Archive
    from tests.sealing import archiver

    url = str(tmp_path / "archive")
    async with await EventStore.open(redis_url, prefix=key_prefix,
                                     archive=Archive.open(url)) as store:
        for i in range(4):
            await store.append_one(message("Sealed", "thread-1", f"m{i}"))
        pj = Projector(store, model_path, [ConversationsProjection()])
        await pj.catch_up()
        await pj.stop()
        await archiver(store, Archive.open(url), hot=0, segment=2).run_pass()
        redis: Any = store.redis
        assert await redis.xlen(store.keys.log(0)) == 0  # no longer in Redis: archived
        assert await store.missing(pj.checkpoint) == []
        await store.append_one(message("Sealed", "thread-1", "after the pass"))
        again = Projector(store, model_path, [ConversationsProjection()])
        try:
            assert await again.catch_up() == 1
            assert again.repairs == 0
        finally:
            await again.stop()


def rows_by_partition(store: EventStore, path: Path) -> dict[int, dict[str, set[Any]]]:
    """Per partition: each table's ``(rowid, *row)`` of the rows whose project lives there."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    out: dict[int, dict[str, set[Any]]] = {p: {} for p in range(store.partitions)}
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        for table in tables:
            columns = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
            if "project" not in columns:
                continue
            at = columns.index("project") + 1
            for row in conn.execute(f'SELECT rowid, * FROM "{table}"'):
                p = store.partition_of(uuid.UUID(row[at]))
                out[p].setdefault(table, set()).add(row)
    finally:
        conn.close()
    return out


async def test_a_repair_refolds_only_the_partitions_that_lost_events(
    cluster_url: str, key_prefix: str, model_path: Path, tmp_path: Path
) -> None:
    """On the cluster with 4 partitions, partition 0 loses applied events: its rows are
    refolded, and the rows of the other partitions are not rewritten (same rowids, same
    content; a whole rebuild would have inserted every row anew), while the model ends equal
    to a fresh rebuild. /readyz-facing state says which partitions were repaired."""
    from chatlog.identity import normalize_project_id
    from chatlog.projections.registry import default_projections

    store = await EventStore.open(cluster_url, partitions=4, prefix=key_prefix)
    try:
        names: dict[int, str] = {}
        for i in range(1000):
            names.setdefault(store.partition_of(normalize_project_id(f"part-{i}").key),
                             f"part-{i}")
        assert len(names) == 4
        async with Projector(store, model_path, default_projections(), block=0.1) as pj:
            # Round robin, each applied before the next: the rows of the partitions
            # interleave in the file (a rebuild would lay them out partition by partition).
            for i in range(3):
                for p in range(4):
                    r = await store.append_one(message(names[p], f"thread-{i % 2}", f"m{i}"))
                    await pj.wait_for(p, r.position, 10)
            saved = await snapshot(store, 0)
            ids = [uuid.uuid4(), uuid.uuid4()]
            for i, e in enumerate(ids):
                r = await store.append_one(message(names[0], "thread-0", f"stale {i}",
                                                   event_id=e))
                await pj.wait_for(0, r.position, 10)
            last = [await store.append_one(message(names[p], "thread-1", "last"))
                    for p in range(1, 4)]
            for r in last:
                await pj.wait_for(r.partition, r.position, 10)
            before = rows_by_partition(store, model_path)
            assert {str(e) for e in ids} <= message_ids(model_path)

            await fail_over_to(store, 0, saved)
            await store.append_one(message(names[0], "thread-0", "written on the new primary"))
            for i, e in enumerate(ids):
                await store.append_one(message(names[0], "thread-0", f"stale {i}", event_id=e))
            await eventually(lambda: pj.repairs >= 1 and pj.problem is None, timeout=30,
                             what="the projector to repair partition 0")

            fresh = tmp_path / "fresh.sqlite"
            await build(store, fresh, default_projections())
            expected = dump(fresh)
            await eventually(lambda: dump(model_path) == expected, timeout=30,
                             what="the read model to equal a fresh rebuild of the log")
            after = rows_by_partition(store, model_path)
            for p in (1, 2, 3):
                assert after[p] == before[p], f"rows of partition {p} were rewritten"
            assert after[0] != before[0]
            assert pj.repairs == 1
            assert pj.last_repair is not None and "partition(s) 0 " in pj.last_repair
            assert "rebuilt" not in pj.last_repair
    finally:
        await store.close()
