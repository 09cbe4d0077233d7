"""The conversation read model through the projector: the seed's tests 2 and 3, lag, waits."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from chatlog.errors import InvalidInput, ProjectionLagTimeout
from chatlog.events import MessageAppended, NewEvent
from chatlog.eventstore import EventStore
from chatlog.identity import normalize_project_id, normalize_thread_id
from chatlog.projections.conversations import ConversationsProjection
from chatlog.projections.projector import Projector
from chatlog.projections.queries import ReadModel
from tests.helpers import eventually, message


def projector(store: EventStore, path: Path, **kw: object) -> Projector:
    return Projector(store, path, [ConversationsProjection()], **kw)  # type: ignore[arg-type]


async def test_case_insensitive_project_one_conversation_list(
    store: EventStore, model_path: Path
) -> None:
    """Seed test 2: save under "Blog-Project", query "blog-project": the same messages."""
    await store.append_one(message("Blog-Project", "thread-a", "first"))
    await store.append_one(message(" blog-project ", "thread-a", "second"))
    await store.append_one(message("BLOG-PROJECT", "thread-b", "third"))
    async with projector(store, model_path) as pj:
        last = await store.append_one(message("blog-project", "thread-a", "fourth"))
        await pj.wait_for(last.partition, last.position, 10)
    model = ReadModel(model_path)
    try:
        key = normalize_project_id("blog-project")
        assert key.key == normalize_project_id("Blog-Project").key
        msgs = model.list_messages(key.key, "thread-a").messages
        assert [m.content for m in msgs] == ["first", "second", "fourth"]
        assert [m.version for m in msgs] == [1, 2, 3]
        projects = model.list_projects()
        assert [(p.project, p.name, p.thread_count, p.message_count) for p in projects] == [
            (key.key, "Blog-Project", 2, 4)  # the first raw name, for display
        ]
        threads = model.list_threads(key.key).threads
        assert [t.thread_id for t in threads] == ["thread-a", "thread-b"]  # newest first
        assert threads[0].message_count == 3
        assert threads[0].last_preview == "fourth"
        assert threads[0].last_message_id == uuid.UUID(last.event_id)
    finally:
        model.close()


async def test_generated_thread_id_groups_the_next_message(
    store: EventStore, model_path: Path
) -> None:
    """Seed test 3: thread_id null → thread-<uuid>; the next message with it joins the thread."""
    key = normalize_project_id("Proj-ABC")
    thread_id, created = normalize_thread_id("null")
    assert created and thread_id.startswith("thread-")
    first = NewEvent.of(MessageAppended(thread_id=thread_id, role="user", content="q"),
                        project=key.key, project_name=key.display, aggregate_type="thread",
                        aggregate_id=thread_id)
    await store.append_one(first)
    again, created_again = normalize_thread_id(thread_id)
    assert again == thread_id and not created_again
    await store.append_one(message("proj-abc", again, "a", role="assistant"))
    other, _ = normalize_thread_id(None)
    await store.append_one(message("proj-abc", other, "another conversation"))
    pj = projector(store, model_path)
    try:
        assert await pj.catch_up() == 3
    finally:
        await pj.stop()
    model = ReadModel(model_path)
    try:
        msgs = model.list_messages(key, thread_id).messages
        assert [(m.role, m.content) for m in msgs] == [("user", "q"), ("assistant", "a")]
        assert model.thread_exists(key, thread_id)
        assert not model.thread_exists(key, "thread-nope")
        assert {t.thread_id for t in model.list_threads(key).threads} == {thread_id, other}
    finally:
        model.close()


async def test_paging_threads_and_messages(store: EventStore, model_path: Path) -> None:
    for i in range(7):
        await store.append_one(message("Paged", f"thread-{i}", f"m{i}"))
    for i in range(5):
        await store.append_one(message("Paged", "thread-long", f"long-{i}"))
    pj = projector(store, model_path, batch_size=3)
    try:
        await pj.catch_up()
    finally:
        await pj.stop()
    model = ReadModel(model_path)
    key = normalize_project_id("paged")
    try:
        seen: list[str] = []
        cursor = None
        while True:
            page = model.list_threads(key, limit=3, cursor=cursor)
            seen += [t.thread_id for t in page.threads]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == ["thread-long"] + [f"thread-{i}" for i in reversed(range(7))]
        first = model.list_messages(key, "thread-long", limit=2)
        assert [m.content for m in first.messages] == ["long-0", "long-1"]
        assert first.next_after_version == 2
        rest = model.list_messages(key, "thread-long", after_version=2, limit=10)
        assert [m.version for m in rest.messages] == [3, 4, 5]
        assert rest.next_after_version is None
        with pytest.raises(InvalidInput, match="cursor"):
            model.list_threads(key, cursor="not-a-cursor!")
        with pytest.raises(InvalidInput, match="limit"):
            model.list_threads(key, limit=0)
    finally:
        model.close()


async def test_unknown_types_are_skipped_and_counted(store: EventStore, model_path: Path) -> None:
    key = normalize_project_id("Mixed")
    await store.append_one(message("Mixed", "thread-1", "before"))
    await store.append_one(NewEvent(type="chat.reaction.v9", project=key.key,
                                    project_name=key.display, aggregate_type="thread",
                                    aggregate_id="thread-1", data={"emoji": "+1"}))
    # a message.appended whose data a newer writer shaped differently: skipped, counted
    await store.append_one(NewEvent(type="message.appended", project=key.key,
                                    project_name=key.display, aggregate_type="thread",
                                    aggregate_id="thread-1", data={"text": "no role"}))
    await store.append_one(message("Mixed", "thread-1", "after"))
    pj = projector(store, model_path)
    try:
        assert await pj.catch_up() == 4
        assert pj.skipped_unknown == 1
    finally:
        await pj.stop()
    model = ReadModel(model_path)
    try:
        assert [m.content for m in model.list_messages(key, "thread-1").messages] == [
            "before", "after"]
    finally:
        model.close()
    import sqlite3

    conn = sqlite3.connect(model_path)
    try:
        assert dict(conn.execute("SELECT name, value FROM projector_counters")) == {
            "skipped_unknown": 1}
        assert dict(conn.execute("SELECT name, value FROM conversation_counters")) == {
            "skipped_invalid": 1}
    finally:
        conn.close()


async def test_live_tail_wait_for_and_lag(store: EventStore, model_path: Path) -> None:
    async with projector(store, model_path, block=0.1) as pj:
        results = await asyncio.gather(*(
            store.append_one(message("Live", f"thread-{i % 3}", f"m{i}")) for i in range(30)))
        last = max(results, key=lambda r: tuple(int(x) for x in r.position.split("-")))
        await pj.wait_for_project(normalize_project_id("live").key, last.position, 10)
        assert pj.reached(last.partition, last.position)
        lag = await pj.lag()
        assert lag.caught_up and lag.events_behind == 0 and lag.seconds_behind == 0
        assert lag.partitions[0].checkpoint == last.position
    model = ReadModel(model_path)
    try:
        summary = model.get_project(normalize_project_id("LIVE"))
        assert summary is not None and summary.message_count == 30
    finally:
        model.close()


async def test_a_read_your_writes_wait_ends_the_pause_between_commits(
        store: EventStore, model_path: Path) -> None:
    # Between commits the projector lets events gather (commit_interval); a
    # waiter must not sit out that pause. With a 60 s interval, the second wait
    # can only succeed within its 10 s if the waiter wakes the projector.
    async with projector(store, model_path, block=0.1, commit_interval=60) as pj:
        first = await store.append_one(message("Pause", "thread-1", "one"))
        await pj.wait_for(first.partition, first.position, 10)
        await eventually(lambda: pj.pausing, what="the projector pausing after that commit")
        second = await store.append_one(message("Pause", "thread-1", "two"))
        await pj.wait_for(second.partition, second.position, 10)
        assert pj.reached(second.partition, second.position)


def test_the_pause_between_commits_is_a_setting(store: EventStore, tmp_path: Path) -> None:
    from chatlog.settings import Settings

    settings = Settings(data_dir=tmp_path, projector_commit_interval=0.2)
    assert Projector.from_settings(store, settings).commit_interval == 0.2
    with pytest.raises(ValueError, match="projector_commit_interval"):
        Settings(data_dir=tmp_path, projector_commit_interval=-1)


async def test_a_projector_behind_reads_on_without_pausing(
        store: EventStore, model_path: Path) -> None:
    # Full batches mean the projector is behind: no pause between them. With
    # a 60 s pause after each of the ten batches, this would take ten minutes.
    async with projector(store, model_path, block=0.1, batch_size=10,
                         commit_interval=60) as pj:
        results = await store.append([message("Behind", "thread-1", f"m{i}")
                                      for i in range(100)])
        last = results[-1]
        await eventually(lambda: pj.reached(last.partition, last.position),  # no waiter to wake it
                         timeout=20, what="the projector reaching the last event")
        assert pj.applied == 100


async def test_wait_for_times_out_with_a_clear_error(store: EventStore, model_path: Path) -> None:
    pj = projector(store, model_path)
    await pj.open()  # open but not following the log: it never gets there
    try:
        r = await store.append_one(message("Slow", "thread-1", "x"))
        with pytest.raises(ProjectionLagTimeout, match=r.position):
            await pj.wait_for(r.partition, r.position, 0.2)
        lag = await pj.lag()
        assert not lag.caught_up and lag.events_behind == 1
    finally:
        await pj.stop()


async def test_restart_resumes_from_the_checkpoint(store: EventStore, model_path: Path) -> None:
    for i in range(10):
        await store.append_one(message("Resume", "thread-1", f"m{i}"))
    first = projector(store, model_path, batch_size=4)
    try:
        assert await first.catch_up() == 10
    finally:
        await first.stop()
    for i in range(10, 15):
        await store.append_one(message("Resume", "thread-1", f"m{i}"))
    second = projector(store, model_path, batch_size=4)
    try:
        assert await second.catch_up() == 5  # only what the first had not applied
    finally:
        await second.stop()
    model = ReadModel(model_path)
    try:
        msgs = model.list_messages(normalize_project_id("resume"), "thread-1").messages
        assert [m.content for m in msgs] == [f"m{i}" for i in range(15)]
    finally:
        model.close()


async def test_two_projectors_on_one_file_apply_each_event_once(
    store: EventStore, model_path: Path
) -> None:
    for i in range(40):
        await store.append_one(message("Twice", f"thread-{i % 4}", f"m{i}"))
    a = projector(store, model_path, batch_size=3)
    b = projector(store, model_path, batch_size=5)
    try:
        await asyncio.gather(a.catch_up(), b.catch_up())
    finally:
        await a.stop()
        await b.stop()
    model = ReadModel(model_path)
    try:
        summary = model.get_project(normalize_project_id("twice"))
        assert summary is not None and summary.message_count == 40
        assert sum(t.message_count for t in model.list_threads(summary.project).threads) == 40
    finally:
        model.close()


async def test_stopping_the_projector_answers_pending_waits(store: EventStore,
                                                            model_path: Path) -> None:
    pj = projector(store, model_path)
    await pj.open()
    r = await store.append_one(message("Stop", "thread-1", "x"))
    waiting = asyncio.create_task(pj.wait_for(r.partition, r.position, 30))
    await eventually(lambda: pj.waiters == 1, what="the wait registered")
    await pj.stop()
    with pytest.raises(ProjectionLagTimeout, match="stopped"):
        await waiting
