"""Remembered ids of archived events (issue 12's memory goal): they leave Redis with their
events, the archive keeps them exactly, and a retry of an archived event is still a
duplicate (same content) or refused (other content). Real Valkey, real files, S3 on
moto's server, ``chatlog archive`` killed at the new steps."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chatlog.errors import EventIdReused, IdempotencyConflict
from chatlog.events import NewEvent
from chatlog.eventstore import EventStore
from chatlog.eventstore.archive import Archive
from chatlog.eventstore.archiver import Archiver, HotWindow
from chatlog.http import STATE
from tests.archive.test_archiver import CHATLOG, crash_env, next_pass_completes
from tests.archive.test_fsspec import s3_url
from tests.helpers import message
from tests.http.conftest import api, post_message

__all__ = ["api", "crash_env", "s3_url"]  # fixtures used here
URL = "/v1/projects/P/messages"


async def remembered_ids(store: EventStore, partition: int = 0) -> int:
    """Id records in the partition's Redis buckets (each bucket also has its field '')."""
    tag = store.keys.log(partition)[: -len("log")]
    n = 0
    async for key in store.redis.scan_iter(match=f"{tag}ids:*", count=1000):
        n += int(await store.redis.hlen(key)) - 1
    return n


async def fill(store: EventStore, n: int) -> list[tuple[NewEvent, str, int]]:
    """``n`` messages, every other one with an id its client chose; (event, position,
    version) each."""
    out = []
    for i in range(n):
        ev = message(thread_id=f"t{i % 4}", content=f"m{i}",
                     event_id=uuid.uuid4() if i % 2 else None)
        r = await store.append_one(ev)
        out.append((ev, r.position, r.version))
    return out


def again(ev: NewEvent, content: str | None = None) -> NewEvent:
    """``ev`` sent again by a client (with its id, as after a 504), or with other content."""
    return message(thread_id=ev.aggregate_id, content=content or ev.data["content"],
                   event_id=ev.id)


async def assert_retries_are_duplicates(store: EventStore,
                                        appended: list[tuple[NewEvent, str, int]]) -> None:
    for ev, position, version in appended:
        r = await store.append_one(again(ev))
        assert (r.duplicate, r.position, r.version) == (True, position, version), ev.id


async def test_archived_ids_leave_redis_and_retries_still_deduplicate(
    store: EventStore, tmp_path: Path, store_factory: Callable[..., object]
) -> None:
    appended = await fill(store, 300)
    assert await remembered_ids(store) == 300
    archive = Archive.open(str(tmp_path))
    store.archive = archive
    (result,) = await Archiver(store, archive, HotWindow(events=100, seconds=0, bytes=0),
                               segment_events=80).run_pass()
    assert result.archived == 200
    # Only the hot tail's ids are left in the buckets (all 300 before this change).
    assert await remembered_ids(store) == 100
    filters = [f for f in await store.redis.hkeys(store.keys.log(0)[: -len("log")] + "idp")
               if f.startswith(b"idf:")]
    assert filters  # the filter of archived ids, per window and generation

    archived, hot = appended[:200], appended[200:]
    await assert_retries_are_duplicates(store, archived[:40] + hot[:10])
    client = next(ev for ev, _, _ in archived if ev.id_supplied)
    with pytest.raises(EventIdReused):
        await store.append_one(again(client, "other content"))
    # A batch: one archived id and one new one is 'partial', as for ids in Redis.
    with pytest.raises(IdempotencyConflict):
        await store.append([again(archived[1][0]).model_copy(
            update={"aggregate_id": "t1"}), message(thread_id="t1", content="new")])
    # New events (server-made and client-chosen ids) are appended once each.
    fresh = [await store.append_one(message(content=f"n{i}", event_id=uuid.uuid4()
                                            if i % 2 else None)) for i in range(20)]
    assert not any(r.duplicate for r in fresh)
    assert await store.aggregate_version(client.project, "thread", "thread-1") == 20

    # A restarted store (nothing in process memory) with the archive's URL.
    other: EventStore = await store_factory(archive=str(tmp_path))  # type: ignore[misc]
    await assert_retries_are_duplicates(other, archived[40:])
    with pytest.raises(EventIdReused):
        await other.append_one(again(client, "still other content"))


async def test_an_archived_id_is_refused_in_a_batch_as_in_redis(
    store: EventStore, tmp_path: Path
) -> None:
    first = message(thread_id="t", content="a", event_id=uuid.uuid4())
    second = message(thread_id="t", content="b", event_id=uuid.uuid4())
    r1, r2 = await store.append([first, second])
    await fill(store, 40)
    archive = Archive.open(str(tmp_path))
    store.archive = archive
    await Archiver(store, archive, HotWindow(events=10, seconds=0, bytes=0)).run_pass()
    assert await remembered_ids(store) == 10
    dup = await store.append([first, second])
    assert [(r.duplicate, r.position) for r in dup] == [(True, r1.position), (True, r2.position)]
    with pytest.raises(EventIdReused) as err:
        await store.append([first, again(second, "c").model_copy(update={"aggregate_id": "t"})])
    assert str(second.id) in str(err.value)


@pytest.mark.parametrize("step", ["published", "ids-published", "ids-removed"])
async def test_a_crash_at_the_ids_steps_loses_no_id(
    step: str, store: EventStore, crash_env: dict[str, str]
) -> None:
    appended = await fill(store, 120)
    proc = await asyncio.to_thread(
        subprocess.run, [*CHATLOG, "archive", "-q"], capture_output=True, text=True,
        timeout=60, env={**crash_env, "CHATLOG_ARCHIVER_CRASH_AT": step,
                         "CHATLOG_ARCHIVE_LEASE": "2"})  # a 1 s lease lapses on a busy machine
    assert proc.returncode == 70, proc.stderr
    archive = Archive.open(crash_env["CHATLOG_ARCHIVE_URL"])
    store.archive = archive
    await assert_retries_are_duplicates(store, appended)
    await next_pass_completes(store, archive)
    assert await remembered_ids(store) == 50
    await assert_retries_are_duplicates(store, appended)


async def test_retries_of_ids_archived_on_s3(store: EventStore, s3_url: str) -> None:
    appended = await fill(store, 60)
    archive = Archive.open(s3_url)
    store.archive = archive
    await Archiver(store, archive, HotWindow(events=20, seconds=0, bytes=0)).run_pass()
    assert await remembered_ids(store) == 20
    await assert_retries_are_duplicates(store, appended)
    client = next(ev for ev, _, _ in appended if ev.id_supplied)
    with pytest.raises(EventIdReused):
        await store.append_one(again(client, "other"))


async def test_over_http_a_retry_of_an_archived_message_is_200_and_other_content_409(
    api: Any, tmp_path: Path
) -> None:
    client = await api()
    store: EventStore = client.server.app[STATE].store
    event_id = str(uuid.uuid4())
    first = await post_message(client, "P", "original", event_id=event_id)
    for i in range(30):
        await post_message(client, "P", f"later {i}")
    archive = Archive.open(str(tmp_path / "archive"))
    await Archiver(store, archive, HotWindow(events=5, seconds=0, bytes=0)).run_pass()
    assert await remembered_ids(store) == 5
    store.archive = archive  # what serve's store has: CHATLOG_ARCHIVE_URL
    retry = await client.post(URL, json={"thread_id": None, "role": "user",
                                         "content": "original", "event_id": event_id})
    assert retry.status == 200, await retry.text()
    doc = await retry.json()
    assert doc["duplicate"] and doc["thread_id"] == first["thread_id"]
    assert doc["position"] == first["position"]
    other = await client.post(URL, json={"role": "user", "content": "something else",
                                         "event_id": event_id})
    assert other.status == 409, await other.text()
    assert other.content_type == "application/problem+json"


async def test_migrate_copies_the_ids_of_archived_events(
    store: EventStore, tmp_path: Path, store_factory: Callable[..., object], key_prefix: str
) -> None:
    from chatlog.eventstore.migration import migrate

    appended = await fill(store, 60)
    archive = Archive.open(str(tmp_path))
    store.archive = archive
    await Archiver(store, archive, HotWindow(events=20, seconds=0, bytes=0)).run_pass()
    assert await remembered_ids(store) == 20
    target: EventStore = await store_factory(prefix=f"{key_prefix}-target")  # type: ignore[misc]
    result = await migrate(store, target)
    assert result.copied == 60
    assert await remembered_ids(target) == 60  # 20 before this change: the hot tail's
    await assert_retries_are_duplicates(target, appended)
    client = next(ev for ev, _, _ in appended if ev.id_supplied)
    with pytest.raises(EventIdReused):
        await target.append_one(again(client, "other"))
