"""The integrations' records live in the same log as everything else: a real archiving
pass (small CHATLOG_HOT_EVENTS) seals them into the archive and they still read back;
deleting a LangGraph thread erases it from every tier; under ack=replicated their
appends move the committed position like every other append."""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path
from typing import Any, TypedDict

import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import StoredEvent, Tracking
from eventsourcing.utils import Environment
from langgraph.checkpoint.conformance.test_utils import (
    generate_checkpoint,
    generate_config,
    generate_metadata,
)
from langgraph.graph import END, START, StateGraph

from chatlog.eventstore import EventStore
from chatlog.eventstore.archive import Archive
from chatlog.eventstore.archiver import Archiver
from chatlog.integrations._runtime import settings_for
from chatlog.integrations.eventsourcing import ChatlogFactory
from chatlog.integrations.langgraph import ChatlogSaver

HOT = 4  # CHATLOG_HOT_EVENTS of these tests


class State(TypedDict, total=False):
    notes: list[str]


def note(state: State) -> State:
    return {"notes": [*state.get("notes", []), f"note {len(state.get('notes', []))}"]}


def graph() -> Any:
    g = StateGraph(State)
    g.add_node("a", note)
    g.add_node("b", note)
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("b", END)
    return g


async def archive_pass(store: EventStore, data: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """One real pass of the archiver with the hot window CHATLOG_HOT_EVENTS=HOT; how many
    events it sealed (the stream keeps the HOT newest)."""
    monkeypatch.setenv("CHATLOG_HOT_EVENTS", str(HOT))
    monkeypatch.setenv("CHATLOG_HOT_BYTES", "0")
    archiver = Archiver.from_settings(store, settings_for(data))
    [result] = await archiver.run_pass()
    assert await store.redis.xlen(store.keys.log(0)) == HOT
    return result.archived


def snapshot(tup: Any) -> tuple[Any, ...]:
    return (tup.config, tup.checkpoint, tup.metadata, tup.parent_config, tup.pending_writes)


async def test_archived_langgraph_checkpoints_read_back(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    async with ChatlogSaver.from_conn_string(data, project="Agents") as saver:
        app = graph().compile(checkpointer=saver)
        config: Any = {"configurable": {"thread_id": "t-1"}}
        for _ in range(3):
            await app.ainvoke({}, config)
        first = [t async for t in saver.alist(config)][-1]
        await saver.aput_writes(first.config, [("notes", ["late"])], "task-late")
        before = [snapshot(t) async for t in saver.alist(config)]
        history = [s async for s in app.aget_state_history(config)]
        latest = snapshot(await saver.aget_tuple(config))

        sealed = await archive_pass(saver.store, data, monkeypatch)
        assert sealed >= len(before)  # most checkpoints, and their writes, left Redis
        assert snapshot(await saver.aget_tuple(first.config)) == before[-1]
        assert ("task-late", "notes", ["late"]) in before[-1][4]
        assert snapshot(await saver.aget_tuple(config)) == latest
        assert [snapshot(t) async for t in saver.alist(config)] == before
        assert [s async for s in app.aget_state_history(config)] == history
        # a copy of the thread carries its archived checkpoints and writes
        await saver.acopy_thread("t-1", "t-copy")
        copied = [t async for t in saver.alist({"configurable": {"thread_id": "t-copy"}})]
        assert [(t.checkpoint, t.metadata, t.pending_writes) for t in copied] == [
            (b[1], b[2], b[4]) for b in before]
        # the graph goes on from its archived history
        result = await app.ainvoke({}, config)
        assert len(result["notes"]) == 8


class Account(Aggregate):
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.balance = 0

    @event("Credited")
    def credit(self, amount: int) -> None:
        self.balance += amount


def test_archived_eventsourcing_records_read_back(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    env = {"PERSISTENCE_MODULE": "chatlog.integrations.eventsourcing",
           "CHATLOG_DATA_DIR": str(data)}
    app = Application[uuid.UUID](env=env)
    try:
        accounts = []
        for owner in ("ann", "bob", "cy"):
            account = Account(owner)
            for amount in range(1, 4):
                account.credit(amount)
            app.save(account)
            accounts.append(account)
        recorder = app.factory.process_recorder()  # type: ignore[attr-defined]
        recorder.insert_events(
            [StoredEvent(originator_id=uuid.uuid4(), originator_version=1, topic="t:X",
                         state=b"x")], tracking=Tracking("Upstream", 5))
        notifications = app.recorder.select_notifications(1, 100)
        assert [n.id for n in notifications] == list(range(1, 14))
        datastore = app.factory.datastore  # type: ignore[attr-defined]

        sealed = datastore.run(archive_pass(datastore.store, data, monkeypatch))
        assert sealed >= 10
        for account in accounts:
            got = app.repository.get(account.id)
            assert (got.owner, got.balance, got.version) == (account.owner, 6, 4)
        assert app.recorder.select_notifications(1, 100) == notifications
        assert app.recorder.select_notifications(2, 3) == notifications[1:4]
        assert app.recorder.select_notifications(
            1, 5, topics=[notifications[3].topic]) == [
                n for n in notifications if n.topic == notifications[3].topic][:5]
        assert app.recorder.max_notification_id() == 13
        assert recorder.max_tracking_id("Upstream") == 5
        assert [e.originator_version for e in app.recorder.select_events(
            accounts[0].id, desc=True, limit=2)] == [4, 3]
    finally:
        app.close()


def values_holding(store: EventStore, marker: bytes) -> Any:
    """Keys of the store's prefix whose value (as read: stream entries, hash fields,
    list and set members, strings) contains ``marker``."""

    async def scan() -> list[bytes]:
        r: Any = store.redis
        found = []
        async for key in r.scan_iter(match=f"{store.keys.prefix}*", count=1000):
            kind = (await r.type(key)).decode()
            if kind == "stream":
                parts = [v for _, f in await r.xrange(key) for kv in f.items() for v in kv]
            elif kind == "hash":
                parts = [v for kv in (await r.hgetall(key)).items() for v in kv]
            elif kind == "list":
                parts = await r.lrange(key, 0, -1)
            elif kind in ("set", "zset"):
                parts = list(await (r.smembers(key) if kind == "set" else r.zrange(key, 0, -1)))
            else:
                parts = [await r.get(key) or b""]
            if any(marker in p for p in parts):
                found.append(key)
        return found

    return scan()


def archived_holding(archive: Archive, marker: bytes) -> list[bytes]:
    archive.reload()
    return [pos for pos, flat in archive.read_flat(0, "0-0", 10**6)
            if any(marker in v for v in flat)]


async def test_deleting_a_thread_erases_it_from_redis_and_the_archive(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    marker = secrets.token_hex(16)
    async with ChatlogSaver.from_conn_string(data, project="Agents") as saver:
        gone, parent = [], None
        for i in range(4):
            config = generate_config("t-gone")
            if parent:
                config["configurable"]["checkpoint_id"] = parent["configurable"]["checkpoint_id"]
            parent = await saver.aput(config, generate_checkpoint(
                channel_values={"secret": f"{marker} {i}"}), generate_metadata(step=i), {})
            await saver.aput_writes(parent, [("secret", f"{marker} write {i}")], f"task-{i}")
            gone.append(parent)
        kept = await saver.aput(generate_config("t-kept"), generate_checkpoint(
            channel_values={"x": "kept"}), generate_metadata(step=0), {})
        await archive_pass(saver.store, data, monkeypatch)
        archive = saver.store.archive
        assert archive is not None
        assert archived_holding(archive, marker.encode())  # sealed there before the delete

        await saver.adelete_thread("t-gone")
        assert await values_holding(saver.store, marker.encode()) == []
        assert archived_holding(archive, marker.encode()) == []
        for config in gone:
            assert await saver.aget_tuple(config) is None
        assert await saver.aget_tuple(generate_config("t-gone")) is None
        assert [t async for t in saver.alist(generate_config("t-gone"))] == []
        assert [t.config for t in [t async for t in saver.alist(None)]] == [kept]
        assert await saver.aget_tuple(kept) is not None


async def test_deleting_a_thread_leaves_threads_whose_ids_extend_its_own(
        store: EventStore) -> None:
    """The erasure's scope is an aggregate id prefix: a thread ``a`` must not take ``a/b``."""
    saver = ChatlogSaver(store, project="Agents")
    for thread_id in ("a", "a/b", "a%2Fb"):
        await saver.aput(generate_config(thread_id), generate_checkpoint(),
                         generate_metadata(step=0), {})
    await saver.adelete_thread("a")
    assert await saver.aget_tuple(generate_config("a")) is None
    assert await saver.aget_tuple(generate_config("a/b")) is not None
    assert await saver.aget_tuple(generate_config("a%2Fb")) is not None
    await saver.adelete_thread("a/b")
    assert await saver.aget_tuple(generate_config("a/b")) is None
    assert await saver.aget_tuple(generate_config("a%2Fb")) is not None


async def test_pruning_erases_the_older_checkpoints_from_every_tier(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    marker = secrets.token_hex(16)
    async with ChatlogSaver.from_conn_string(data, project="Agents") as saver:
        parent = None
        for i in range(7):
            config = generate_config("t-1")
            if parent:
                config["configurable"]["checkpoint_id"] = parent["configurable"]["checkpoint_id"]
            secret = f"{marker} {i}" if i < 6 else "newest"
            parent = await saver.aput(config, generate_checkpoint(
                channel_values={"s": secret}), generate_metadata(step=i), {})
        await archive_pass(saver.store, data, monkeypatch)
        await saver.aprune(["t-1"])
        assert await values_holding(saver.store, marker.encode()) == []
        assert saver.store.archive is not None
        assert archived_holding(saver.store.archive, marker.encode()) == []
        left = [t async for t in saver.alist(generate_config("t-1"))]
        assert [t.config for t in left] == [parent]
        assert left[0].checkpoint["channel_values"] == {"s": "newest"}


async def test_integration_appends_move_the_committed_position(
        cluster_url: str, key_prefix: str) -> None:
    """Under ack=replicated on the cluster, readers deliver only what is committed: the
    integrations' appends are committed (replicated, high watermark moved) when answered."""
    store = await EventStore.open(cluster_url, prefix=key_prefix, ack="replicated",
                                  ack_replicas=1, ack_timeout=5)
    try:
        saver = ChatlogSaver(store, project="Agents")
        saved = await saver.aput(generate_config("t-1"), generate_checkpoint(),
                                 generate_metadata(step=0), {})
        await saver.aput_writes(saved, [("x", 1)], "task-1")
        p = saver.keys.partition
        head = (await store.redis.xrevrange(store.keys.log(p), "+", "-", 1))[0][0].decode()
        assert (await store.committed()).positions[p] == head
        assert [e.type for e in await store.read(p)] == ["langgraph.checkpoint",
                                                         "langgraph.writes"]
    finally:
        await store.close()



def test_eventsourcing_appends_move_the_committed_position(
        cluster_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATLOG_ACK", "replicated")
    env = Environment("Bank", {"CHATLOG_REDIS_URL": cluster_url, "CHATLOG_KEY_PREFIX": key_prefix})
    factory = ChatlogFactory(env)
    try:
        ds = factory.datastore
        assert ds.store.ack == "replicated"
        recorder = factory.process_recorder()
        assert recorder.insert_events(
            [StoredEvent(originator_id=uuid.uuid4(), originator_version=1, topic="t:A",
                         state=b"s")], tracking=Tracking("Up", 1)) == [1]
        p = ds.partition
        head = ds.redis.xrevrange(ds.store.keys.log(p), "+", "-", 1)[0][0].decode()
        assert ds.run(ds.store.committed()).positions[p] == head
        assert [e.type for e in ds.run(ds.store.read(p))] == [
            "eventsourcing.recorded", "eventsourcing.tracked"]
    finally:
        factory.close()
