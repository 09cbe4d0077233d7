"""The archiver on real Valkey, real files and real processes: passes, crashes at every
step, the lease and its fencing token, two archivers on the test cluster."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest

from chatlog.errors import ArchiveConflict
from chatlog.eventstore import EventStore
from chatlog.eventstore.archive import Archive
from chatlog.eventstore.archiver import STEPS, Archiver, HotWindow, Lease, holding_lease
from chatlog.eventstore.codec import parse_position
from chatlog.eventstore.keys import partition_of
from chatlog.identity import normalize_project_id
from tests.helpers import eventually, message

CHATLOG = [sys.executable, "-m", "chatlog"]
THREADS = 5
Flat = tuple[bytes, list[bytes]]


async def fill(store: EventStore, n: int, project: str = "Blog-Project") -> dict[bytes, bytes]:
    """Append ``n`` messages over THREADS threads concurrently; position -> content."""
    appended: dict[bytes, bytes] = {}

    async def thread(t: int) -> None:
        for i in range(t, n, THREADS):
            r = await store.append_one(message(project, thread_id=f"t{t}", content=f"m{i}"))
            appended[r.position.encode()] = f"m{i}".encode()

    await asyncio.gather(*(thread(t) for t in range(THREADS)))
    return appended


async def hot(store: EventStore, partition: int = 0) -> list[Flat]:
    rows: Any = await store.redis.xrange(store.keys.log(partition), "-", "+")
    return [(pos, [x for kv in fields.items() for x in kv]) for pos, fields in rows]


async def whole_log(store: EventStore, archive: Archive, partition: int = 0) -> list[Flat]:
    """Archive then Redis as one log, de-duplicated by position (what 'tiered' will read);
    asserts that an event in both tiers is the same event."""
    archive.reload()
    merged: dict[bytes, list[bytes]] = {}
    for pos, flat in archive.read_flat(partition, "0-0", 10**9):
        merged[pos] = flat
    for pos, flat in await hot(store, partition):
        if pos in merged:
            assert dict(zip(flat[::2], flat[1::2], strict=True)) == dict(
                zip(merged[pos][::2], merged[pos][1::2], strict=True))
        merged[pos] = flat
    return sorted(merged.items(), key=lambda e: parse_position(e[0].decode()))


def content(flat: list[bytes]) -> bytes:
    body = flat[flat.index(b"b") + 1]
    return body.split(b'"content":"', 1)[1].split(b'"', 1)[0]


async def assert_every_event_once(store: EventStore, archive: Archive,
                                  appended: dict[bytes, bytes], partition: int = 0) -> None:
    log = await whole_log(store, archive, partition)
    assert [p for p, _ in log] == sorted(appended, key=lambda p: parse_position(p.decode()))
    assert {p: content(f) for p, f in log} == appended


async def assert_redis_holds_only_the_hot_tail(store: EventStore, archive: Archive,
                                               partition: int = 0) -> None:
    newest = archive.newest(partition)
    assert newest is not None
    tail = await hot(store, partition)
    assert all(parse_position(p.decode()) > parse_position(newest) for p, _ in tail)
    per_aggregate: dict[bytes, list[bytes]] = {}
    for pos, flat in tail:
        per_aggregate.setdefault(flat[flat.index(b"a") + 1], []).append(pos)
    project = normalize_project_id("Blog-Project").key
    for t in range(THREADS):
        agg = f"{project}/thread/t{t}"
        index = await store.redis.lrange(store.keys.aggregate_index(partition, agg), 0, -1)
        assert index == per_aggregate.get(agg.encode(), [])
        version = await store.aggregate_version(project, "thread", f"t{t}")
        assert version == len(archive.read_aggregate(partition, agg)) + len(index)


async def test_a_pass_seals_beyond_the_window_and_trims_redis(
    store: EventStore, tmp_path: Path
) -> None:
    appended = await fill(store, 300)
    archive = Archive.open(str(tmp_path))
    archiver = Archiver(store, archive, HotWindow(events=100, seconds=0, bytes=0),
                        segment_events=80)
    seen: list[tuple[int, int, int]] = []
    (result,) = await archiver.run_pass(progress=lambda *a: seen.append(a))
    assert (result.archived, result.segments, result.trimmed) == (200, 3, 200)
    assert seen[0] == (0, 0, 200) and seen[-1] == (0, 200, 200)
    assert [s.count for s in archive.segments(0)] == [80, 80, 40]
    assert await store.redis.xlen(store.keys.log(0)) == 100
    await assert_every_event_once(store, archive, appended)
    await assert_redis_holds_only_the_hot_tail(store, archive)
    # Within the window (and its tenth of slack): the next pass seals nothing.
    appended |= await fill(store, 10)
    (again,) = await archiver.run_pass()
    assert again.archived == 0 and again.skipped == "within the hot window"


async def test_the_memory_bound_seals_too(store: EventStore, tmp_path: Path) -> None:
    await fill(store, 200)
    used = int(await store.redis.memory_usage(store.keys.log(0)))
    archive = Archive.open(str(tmp_path))
    archiver = Archiver(store, archive, HotWindow(events=0, seconds=0, bytes=used // 4))
    (result,) = await archiver.run_pass()
    assert 100 <= result.archived < 200
    assert await store.redis.xlen(store.keys.log(0)) == 200 - result.archived


async def test_the_age_bound_seals_what_is_older(store: EventStore, tmp_path: Path) -> None:
    appended = await fill(store, 50)
    last_ms = max(parse_position(p.decode())[0] for p in appended)
    await eventually(lambda: time.time() * 1000 > last_ms + 200, what="200 ms to pass")
    archive = Archive.open(str(tmp_path))
    archiver = Archiver(store, archive, HotWindow(events=0, seconds=0.1, bytes=0))
    (result,) = await archiver.run_pass()
    assert result.archived == 50
    assert await store.redis.xlen(store.keys.log(0)) == 0
    await assert_every_event_once(store, archive, appended)


async def test_archive_and_status_commands(
    store: EventStore, crash_env: dict[str, str]
) -> None:
    await fill(store, 300)
    proc = await asyncio.to_thread(subprocess.run, [*CHATLOG, "archive"], capture_output=True,
                                   text=True, timeout=60, env=crash_env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        "partition 0: archived 250 events in 5 segments; removed 250 from Redis")
    assert "archiving p0" in proc.stderr  # the progress bar
    proc = await asyncio.to_thread(subprocess.run, [*CHATLOG, "status", "--json"],
                                   capture_output=True, text=True, timeout=60, env=crash_env)
    assert proc.returncode == 0, proc.stderr
    (part,) = json.loads(proc.stdout)["archive"]["partitions"]
    assert (part["segments"], part["events"]) == (5, 250)
    assert part["newest"] == Archive.open(crash_env["CHATLOG_ARCHIVE_URL"]).newest(0)


async def test_a_lease_holder_keeps_others_out_and_a_stale_one_cannot_publish(
    store: EventStore, tmp_path: Path
) -> None:
    await fill(store, 40)
    entries = await hot(store)
    archive = Archive.open(str(tmp_path))
    first, second = Lease(store, 0, ttl=30), Lease(store, 0, ttl=30)
    token = await first.acquire()
    assert token > 0 and await second.acquire() == 0
    assert await first.acquire() == token  # the holder keeps its token
    busy = Archiver(store, archive, HotWindow(events=1, seconds=0, bytes=0))
    (result,) = await busy.run_pass()
    assert result.skipped == "lease held by another archiver"
    staged = archive.stage(0, entries[:20])
    await store.redis.delete(first.key)  # the first holder's lease expires meanwhile
    newer = await second.acquire()
    assert newer > token
    assert not await first.renew()
    archive.publish(archive.stage(0, entries[:10]), fence=newer)
    with pytest.raises(ArchiveConflict):
        archive.publish(staged, fence=token)
    assert [s.count for s in archive.segments(0)] == [10]
    await second.release()
    assert await store.redis.get(second.key) is None


async def test_a_deletion_holding_the_lease_keeps_archivers_out(
    store: EventStore, tmp_path: Path
) -> None:
    appended = await fill(store, 200)
    archive = Archive.open(str(tmp_path))
    archiver = Archiver(store, archive, HotWindow(events=50, seconds=0, bytes=0),
                        segment_events=60)
    (first,) = await archiver.run_pass()
    assert first.archived == 150
    # A cut inside the hot tail: every archived event goes, and 20 of Redis's.
    cut = sorted(appended, key=lambda p: parse_position(p.decode()))[170].decode()
    async with holding_lease(store, 0, ttl=5, wait=5) as token:
        (blocked,) = await archiver.run_pass()
        assert blocked.skipped == "lease held by another archiver"
        assert archive.delete_before(0, cut, fence=token) == 150
    with pytest.raises(ArchiveConflict, match="newer lease"):
        archive.delete_before(0, cut, fence=token - 1)
    # Redis still holds its events (the deletion's second half is the store's): the
    # archiver archives nothing before the deleted position again.
    await fill(store, 200)
    (after,) = await archiver.run_pass()
    assert after.archived == 200  # 250 in Redis, 50 kept hot: 20 deleted ones skipped
    archive.reload()
    assert archive.oldest(0) == cut


@pytest.fixture
def crash_env(redis_url: str, key_prefix: str, tmp_path: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("CHATLOG_")},
        "CHATLOG_REDIS_URL": redis_url, "CHATLOG_KEY_PREFIX": key_prefix,
        "CHATLOG_DATA_DIR": str(tmp_path / "data"),
        "CHATLOG_ARCHIVE_URL": str(tmp_path / "data" / "archive"),
        "CHATLOG_HOT_EVENTS": "50", "CHATLOG_HOT_BYTES": "0",
        "CHATLOG_ARCHIVE_SEGMENT_EVENTS": "60", "CHATLOG_ARCHIVE_LEASE": "1",
    }


async def next_pass_completes(store: EventStore, archive: Archive) -> None:
    """Another archiver's pass, once the dead process's lease has expired, completes."""
    archiver = Archiver(store, archive, HotWindow(events=50, seconds=0, bytes=0),
                        segment_events=60, lease_ttl=5)

    async def passed() -> bool:
        (result,) = await archiver.run_pass()
        return result.skipped != "lease held by another archiver"

    await eventually(passed, timeout=10, what="the dead archiver's lease to expire")


def test_archive_command_names_a_missing_partition_in_one_line(
    crash_env: dict[str, str]
) -> None:
    proc = subprocess.run([*CHATLOG, "archive", "--partition", "7"], capture_output=True,
                          text=True, timeout=60, env=crash_env)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "Error: partition 7 does not exist; this log has partitions 0..0"]


# The id steps (after "trimmed": the events are where a crash at "trimmed" leaves
# them) are crashed at by test_archived_ids.py, which checks the ids there.
@pytest.mark.parametrize("step", [s for s in STEPS if not s.startswith("ids-")])
async def test_a_crash_at_any_step_loses_nothing(
    step: str, store: EventStore, tmp_path: Path, crash_env: dict[str, str]
) -> None:
    appended = await fill(store, 300)
    proc = await asyncio.to_thread(
        subprocess.run, [*CHATLOG, "archive", "-q"], capture_output=True, text=True,
        timeout=60, env={**crash_env, "CHATLOG_ARCHIVER_CRASH_AT": step})
    assert proc.returncode == 70, proc.stderr
    archive = Archive.open(crash_env["CHATLOG_ARCHIVE_URL"])
    await assert_every_event_once(store, archive, appended)
    published = archive.count(0)
    assert published == (0 if step in ("written", "verified", "renamed") else 60)

    await next_pass_completes(store, archive)
    await assert_every_event_once(store, archive, appended)
    await assert_redis_holds_only_the_hot_tail(store, archive)
    assert archive.count(0) == 250
    assert await store.redis.xlen(store.keys.log(0)) == 50
    files = duckdb.sql(f"select count(*), count(distinct position) from read_parquet("
                       f"'{crash_env['CHATLOG_ARCHIVE_URL']}/**/*.parquet')").fetchall()
    assert files == [(250, 250)]


async def test_serve_archives_in_the_background_and_survives_a_crash(
    store: EventStore, tmp_path: Path, crash_env: dict[str, str]
) -> None:
    appended = await fill(store, 300)
    env = {**crash_env, "CHATLOG_ARCHIVER_CRASH_AT": "published"}
    proc = await asyncio.create_subprocess_exec(
        *CHATLOG, "serve", "--port", "0", env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 70, err
    archive = Archive.open(crash_env["CHATLOG_ARCHIVE_URL"])
    assert archive.count(0) == 60
    await assert_every_event_once(store, archive, appended)
    served = await asyncio.create_subprocess_exec(
        *CHATLOG, "serve", "--port", "0", env={**crash_env, "CHATLOG_ARCHIVE_INTERVAL": "0.2"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async def archived() -> bool:
            archive.reload()
            return archive.count(0) == 250

        await eventually(archived, timeout=30, what="serve's archiver to seal 250 events")
        await eventually(lambda: _xlen_is(store, 50), timeout=10, what="Redis to hold 50")
    finally:
        served.terminate()
        await asyncio.wait_for(served.wait(), timeout=20)
    await assert_every_event_once(store, archive, appended)
    await assert_redis_holds_only_the_hot_tail(store, archive)


async def _xlen_is(store: EventStore, n: int) -> bool:
    return int(await store.redis.xlen(store.keys.log(0))) == n


def two_projects(partitions: int) -> list[str]:
    """Project names that land in different partitions."""
    found: dict[int, str] = {}
    for i in range(100):
        name = f"project-{i}"
        found.setdefault(partition_of(normalize_project_id(name).key, partitions), name)
        if len(found) == partitions:
            return [found[p] for p in range(partitions)]
    raise AssertionError("no projects for every partition")


@pytest.mark.cluster
async def test_two_archivers_on_the_cluster_never_overlap(
    cluster_url: str, store_factory: Callable[..., Any], tmp_path: Path
) -> None:
    first: EventStore = await store_factory(cluster_url, partitions=2)
    second: EventStore = await store_factory(cluster_url, partitions=2)
    archive_dir = str(tmp_path / "shared")
    window = HotWindow(events=20, seconds=0, bytes=0)
    archivers = [Archiver(s, Archive.open(archive_dir), window, segment_events=15, lease_ttl=5)
                 for s in (first, second)]
    projects = two_projects(2)
    appended: list[dict[bytes, bytes]] = [{}, {}]
    done = asyncio.Event()

    async def append() -> None:
        for i in range(400):
            p = i % 2
            r = await first.append_one(message(projects[p], thread_id=f"t{i % 3}",
                                               content=f"m{i}"))
            appended[r.partition][r.position.encode()] = f"m{i}".encode()
            if i % 20 == 0:
                await asyncio.sleep(0)
        done.set()

    async def archive_until_done(archiver: Archiver) -> int:
        passes = 0
        while not done.is_set() or passes < 2:
            await archiver.run_pass()
            passes += 1
            await asyncio.sleep(0)
        return passes

    await asyncio.gather(append(), *(archive_until_done(a) for a in archivers))
    for a in archivers:
        await a.run_pass()
    reader = Archive.open(archive_dir)
    for p in range(2):
        segments = reader.segments(p)
        assert segments, p
        for before, after in itertools.pairwise(segments):
            assert parse_position(after.first) > parse_position(before.last)
        assert await first.redis.xlen(first.keys.log(p)) <= 22
        await assert_every_event_once(first, reader, appended[p], p)
