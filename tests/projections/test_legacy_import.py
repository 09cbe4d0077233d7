"""Seed test 4 (no regression): legacy conversations imported, still retrievable after a
rebuild under the new normalisation; a second import adds nothing; bad files import nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatlog.eventstore import EventStore
from chatlog.identity import DEFAULT_PROJECT_NAMESPACE, SYSTEM_PROJECT, normalize_project_id
from chatlog.projections.conversations import ConversationsProjection
from chatlog.projections.legacy import (
    ImportRejected,
    import_file,
    legacy_thread_id,
    read_legacy,
)
from chatlog.projections.queries import ReadModel
from chatlog.projections.rebuild import rebuild
from tests.helpers import eventually

LEGACY = [
    {"project_id": "Blog-Project", "thread_id": "t-100", "role": "user",
     "content": "How do I deploy?", "created_at": "2025-11-02T09:00:00Z", "message_id": "1"},
    {"project_id": "blog-project", "thread_id": "t-100", "role": "assistant",
     "content": "Run the pipeline.", "created_at": "2025-11-02T09:00:05Z", "message_id": "2"},
    {"project_id": " BLOG-PROJECT ", "thread_id": "null", "role": "user", "content": "hello?"},
    {"project_id": "Blog-Project", "thread_id": None, "role": "user", "content": "hello?"},
    {"project_id": "Blog-Project", "thread_id": "", "role": "assistant", "content": "hi"},
    {"project_id": "system-master", "thread_id": "none", "role": "system", "content": "boot"},
    {"project_id": "Other", "thread_id": "t-7", "role": "user", "content": "x",
     "message_id": "8d0c6a34-5f0b-4c61-9a0e-2b2f5d1f1f11", "metadata": {"tokens": 3}},
]


def write_jsonl(path: Path, docs: list[object], extra_lines: list[str] | None = None) -> Path:
    lines = [json.dumps(d) for d in docs] + (extra_lines or [])
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_legacy_conversations_survive_import_and_rebuild(
    store: EventStore, tmp_path: Path, model_path: Path
) -> None:
    src = write_jsonl(tmp_path / "legacy.jsonl", LEGACY)
    first = await import_file(store, src, DEFAULT_PROJECT_NAMESPACE)
    assert (first.lines, first.imported, first.already_present) == (7, 7, 0)
    again = await import_file(store, src, DEFAULT_PROJECT_NAMESPACE)
    assert (again.imported, again.already_present) == (0, 7)
    assert (await store.status()).length == 7  # the log did not grow

    await rebuild(store, model_path, [ConversationsProjection()])
    model = ReadModel(model_path)
    try:
        blog = normalize_project_id("blog-project")
        msgs = model.list_messages(blog, "t-100").messages
        assert [(m.role, m.content) for m in msgs] == [
            ("user", "How do I deploy?"), ("assistant", "Run the pipeline.")]
        assert msgs[0].metadata["created_at"] == "2025-11-02T09:00:00+00:00"
        assert msgs[0].metadata["legacy_message_id"] == "1"
        # every null spelling of one project lands in one thread, in file order,
        # and the two identical "hello?" lines stay two messages
        nulls = model.list_messages(blog, legacy_thread_id(blog.key)).messages
        assert [m.content for m in nulls] == ["hello?", "hello?", "hi"]
        assert {t.thread_id for t in model.list_threads(blog).threads} == {
            "t-100", legacy_thread_id(blog.key)}
        projects = {p.project: p for p in model.list_projects()}
        assert projects[blog.key].name == "Blog-Project"
        assert projects[blog.key].message_count == 5
        assert SYSTEM_PROJECT in projects
        other = model.list_messages(normalize_project_id("other"), "t-7").messages
        assert str(other[0].message_id) == "8d0c6a34-5f0b-4c61-9a0e-2b2f5d1f1f11"
        assert other[0].metadata["tokens"] == 3
    finally:
        model.close()


async def test_reimport_after_the_idempotency_window_still_adds_nothing(
    store_factory: object, tmp_path: Path
) -> None:
    """The import skips ids already in their thread, not only within the dedupe window."""
    short = await store_factory(idempotency_window=0.001)  # type: ignore[operator]
    src = write_jsonl(tmp_path / "legacy.jsonl", LEGACY)
    await import_file(short, src, DEFAULT_PROJECT_NAMESPACE)

    async def expired() -> bool:  # every bucket of remembered event ids has expired
        window = short.idempotency_window_ms
        return not await short.redis.keys(f"{short.keys.tag(0)}:ids:{window}:*")

    await eventually(expired, what="every event id's record expiring")
    again = await import_file(short, src, DEFAULT_PROJECT_NAMESPACE)
    assert again.imported == 0
    assert (await short.status()).length == len(LEGACY)


async def test_a_bad_file_imports_nothing(store: EventStore, tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "bad.jsonl", LEGACY[:3], [
        "{not json",
        json.dumps({"project_id": "Blog-Project", "content": "no role"}),
        json.dumps(["a", "list"]),
        json.dumps({"project_id": "x" * 300, "role": "user", "content": "too long"}),
    ])
    with pytest.raises(ImportRejected) as info:
        await import_file(store, src, DEFAULT_PROJECT_NAMESPACE)
    text = str(info.value)
    assert "4 bad lines, nothing imported" in text
    for n in (4, 5, 6, 7):
        assert f"line {n}:" in text
    assert "line 1:" not in text and "\n" not in text
    assert (await store.status()).length == 0


def test_event_ids_are_deterministic(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "legacy.jsonl", LEGACY)
    a = read_legacy(src, DEFAULT_PROJECT_NAMESPACE)
    b = read_legacy(src, DEFAULT_PROJECT_NAMESPACE)
    assert [e.id for e in a] == [e.id for e in b]
    assert len({e.id for e in a}) == len(a)
    assert all(e.id_supplied for e in a)
    assert a[2].aggregate_id == a[3].aggregate_id == a[4].aggregate_id


async def test_imported_history_keeps_its_dates_live_and_after_a_rebuild(
    store: EventStore, tmp_path: Path, model_path: Path
) -> None:
    from datetime import UTC, datetime

    from chatlog.projections.projector import Projector
    from tests.helpers import message

    await store.append_one(message("Blog-Project", "t-live", "written today"))
    src = write_jsonl(tmp_path / "legacy.jsonl", LEGACY[:2])
    await import_file(store, src, DEFAULT_PROJECT_NAMESPACE)
    blog = normalize_project_id("blog-project")
    sent = datetime(2025, 11, 2, 9, 0, 0, tzinfo=UTC)
    answered = datetime(2025, 11, 2, 9, 0, 5, tzinfo=UTC)

    def check(path: Path) -> None:
        model = ReadModel(path)
        try:
            msgs = model.list_messages(blog, "t-100").messages
            assert [m.created_at for m in msgs] == [sent, answered]
            threads = model.list_threads(blog).threads
            # the imported conversation sorts as old, below today's
            assert [t.thread_id for t in threads] == ["t-live", "t-100"]
            assert (threads[1].created_at, threads[1].updated_at) == (sent, answered)
        finally:
            model.close()

    incremental = tmp_path / "incremental.sqlite"
    async with Projector(store, incremental, [ConversationsProjection()]) as projector:
        await projector.catch_up()
    check(incremental)
    await rebuild(store, model_path, [ConversationsProjection()])
    check(model_path)
    # the event's own time is still the append time
    events = await store.read(0, "0-0", 10)
    imported = [e for e in events if e.aggregate_id == "t-100"]
    assert all(e.time > answered for e in imported)
    assert imported[0].data["created_at"].startswith("2025-11-02T09:00:00")
