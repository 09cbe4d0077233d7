"""The archive on fsspec URLs: fsspec's in-memory file system, and S3 through s3fs against
moto's S3-compatible server (``ThreadedMotoServer``, a real HTTP server on 127.0.0.1;
``s3fs`` and ``moto[server]`` are in the test extra, so this runs in every suite)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from chatlog.eventstore import EventStore
from chatlog.eventstore.archive import Archive
from tests.helpers import message

Entry = tuple[bytes, list[bytes]]


@pytest.fixture
async def log(store: EventStore) -> list[Entry]:
    for i in range(60):
        await store.append_one(message(thread_id=f"t{i % 3}", content=f"m{i}"))
    return [(pos, list(flat)) for pos, flat in await store.read_flat(0, "0-0", 100)]


def exercise(url: str, entries: list[Entry]) -> None:
    """Publish, read every way, remove an orphan, delete: the whole API on ``url``."""
    archive = Archive.open(url)
    archive.publish(archive.stage(0, entries[:25], row_group_rows=8), fence=1)
    archive.publish(archive.stage(0, entries[25:], row_group_rows=8), fence=1)
    staged = archive.stage(0, entries[:5])  # left behind by a "crash"
    reader = Archive.open(url)
    assert reader.partitions() == [0]
    assert [s.count for s in reader.segments(0)] == [25, 35]
    assert reader.read_flat(0, "0-0", 100) == entries
    assert reader.read_flat(0, entries[30][0].decode(), 5) == entries[31:36]
    aggregate = entries[0][1][5].decode()
    assert reader.read_aggregate(0, aggregate) == [e for e in entries if e[1][5] == entries[0][1][5]]
    assert sum(b.num_rows for b in reader.iter_batches(0, entries[9][0].decode())) == 50
    assert archive.remove_orphans(0) == 1
    assert not archive.storage.exists(staged.tmp_path)
    assert archive.delete_before(0, entries[30][0].decode()) == 30
    assert Archive.open(url).read_flat(0, "0-0", 100) == entries[30:]


def test_the_archive_on_an_fsspec_file_system(log: list[Entry]) -> None:
    exercise(f"memory://archive-{uuid.uuid4().hex[:8]}", log)


@pytest.fixture
def s3_url() -> Iterator[str]:
    """A bucket on moto's S3 server (a real HTTP server on loopback), stopped after."""
    import boto3
    import fsspec
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    saved: dict[str, Any] = dict(fsspec.config.conf.get("s3", {}))
    fsspec.config.conf["s3"] = {"endpoint_url": f"http://{host}:{port}", "key": "test",
                                "secret": "test", "client_kwargs": {"region_name": "us-east-1"}}
    try:
        bucket = f"chatlog-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=f"http://{host}:{port}", aws_access_key_id="test",
                     aws_secret_access_key="test", region_name="us-east-1",
                     ).create_bucket(Bucket=bucket)
        yield f"s3://{bucket}/archive"
    finally:
        fsspec.config.conf["s3"] = saved
        server.stop()


async def test_the_archive_on_s3(log: list[Entry], s3_url: str) -> None:
    await asyncio.to_thread(exercise, s3_url, log)


async def test_the_archiver_seals_into_s3_and_the_store_reads_both_tiers(
        store: EventStore, log: list[Entry], s3_url: str) -> None:
    from chatlog.eventstore.archiver import Archiver, HotWindow

    archive = await asyncio.to_thread(Archive.open, s3_url)
    (result,) = await Archiver(store, archive, HotWindow(20, 0, 0),
                               segment_events=15).run_pass()
    assert (result.archived, result.segments) == (40, 3)
    assert await store.redis.xlen(store.keys.log(0)) == 20
    store.archive = archive
    assert await store.read_flat(0, "0-0", 100) == log
