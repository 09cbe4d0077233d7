"""ChatlogSaver: records are log events, deletion removes them, blocking use, kill -9 resume."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from langgraph.checkpoint.conformance.test_utils import (
    generate_checkpoint,
    generate_config,
    generate_metadata,
)

from chatlog.eventstore import EventStore
from chatlog.identity import normalize_project_id
from chatlog.integrations.langgraph import ChatlogSaver

GRAPH = Path(__file__).with_name("hitl_graph.py")


async def _thread(saver: ChatlogSaver, tid: str, n: int) -> list[dict]:
    stored, parent = [], None
    for i in range(n):
        config = generate_config(tid)
        if parent:
            config["configurable"]["checkpoint_id"] = parent["configurable"]["checkpoint_id"]
        parent = await saver.aput(config, generate_checkpoint(channel_values={"x": i}),
                                  generate_metadata(step=i), {"x": i + 1})
        await saver.aput_writes(parent, [("x", b"\x00\xff" * 10)], f"task-{i}")
        stored.append(parent)
    return stored


async def _keys(store: EventStore, pattern: str) -> list[bytes]:
    return [k async for k in store.redis.scan_iter(match=pattern)]  # type: ignore[union-attr]


async def test_checkpoints_are_log_events_and_deleting_removes_them(store: EventStore) -> None:
    saver = ChatlogSaver(store, project="Agents")
    kept = await _thread(saver, "t-keep", 2)
    await _thread(saver, "t-gone", 3)
    events = await store.read(0)
    assert {e.type for e in events} == {"langgraph.checkpoint", "langgraph.writes"}
    assert all(e.aggregate_type == "langgraph" and e.blob for e in events)
    assert sum(e.data["thread_id"] == "t-gone" for e in events) == 6
    project = normalize_project_id("Agents").key

    def aggregate(cfg: dict) -> str:
        c = cfg["configurable"]
        return f"{c['thread_id']}/{c['checkpoint_ns']}/{c['checkpoint_id']}"

    # A checkpoint and its writes are one aggregate, versions 1, 2.
    first = await store.read_aggregate(project, "langgraph", aggregate(kept[0]))
    assert [(e.type, e.version) for e in first] == [
        ("langgraph.checkpoint", 1), ("langgraph.writes", 2)]

    await saver.adelete_thread("t-gone")
    left = [e for e in await store.read(0) if e.aggregate_type == "langgraph"]
    assert {e.data["thread_id"] for e in left} == {"t-keep"}  # the entries left the stream
    tombstones = [e for e in await store.read(0) if e.type == "erasure.recorded"]
    assert [e.data["aggregates"] for e in tombstones] == ["langgraph/t-gone/"]
    gone = saver.keys.thread("t-gone")
    assert await _keys(store, f"{gone}*") == []
    assert await saver.aget_tuple(generate_config("t-gone")) is None

    await saver.aprune(["t-keep"])
    assert await store.read_aggregate(project, "langgraph", aggregate(kept[0])) == []
    latest = await store.read_aggregate(project, "langgraph", aggregate(kept[1]))
    assert [(e.type, e.version) for e in latest] == [
        ("langgraph.checkpoint", 1), ("langgraph.writes", 2)]
    assert len([e for e in await store.read(0) if e.aggregate_type == "langgraph"]) == 2
    tup = await saver.aget_tuple(generate_config("t-keep"))
    assert tup is not None and tup.pending_writes == [("task-1", "x", b"\x00\xff" * 10)]


async def test_blocking_calls_raise_on_the_saver_loop_and_work_elsewhere(
    store: EventStore,
) -> None:
    saver = ChatlogSaver(store, project="Agents")
    [stored] = await _thread(saver, "t-sync", 1)
    with pytest.raises(RuntimeError, match="would wait for itself"):
        saver.get_tuple(stored)  # on the loop's own thread: raise, never hang
    got = await asyncio.to_thread(saver.get_tuple, stored)
    assert got is not None and got.checkpoint["channel_values"] == {"x": 0}
    listed = await asyncio.to_thread(lambda: list(saver.list(generate_config("t-sync"))))
    assert [t.config["configurable"]["checkpoint_id"] for t in listed] == [
        stored["configurable"]["checkpoint_id"]]


def _start(url: str, prefix: str, thread: str, mode: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, str(GRAPH), url, prefix, thread, mode, "start"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("INTERRUPTED publish 'a post about event logs'?"), line
    return proc


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_interrupted_graph_resumes_in_a_new_process_after_kill_9(
    mode: str, redis_url: str, key_prefix: str,
) -> None:
    thread = f"t-{uuid.uuid4().hex[:8]}"
    proc = _start(redis_url, key_prefix, thread, mode)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    proc.stdout.close()  # type: ignore[union-attr]
    out = subprocess.run(
        [sys.executable, str(GRAPH), redis_url, key_prefix, thread, mode, "resume"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    state = json.loads(out.stdout.strip().splitlines()[-1])
    assert state == {"draft": "a post about event logs", "answer": "yes", "published": True}


async def test_from_conn_string_on_a_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with ChatlogSaver.from_conn_string(data, project="Agents") as saver:
        [stored] = await _thread(saver, "t-dir", 1)
    async with ChatlogSaver.from_conn_string(str(data), project="agents") as saver:  # reopened
        got = await saver.aget_tuple(stored)
    assert got is not None and got.checkpoint["channel_values"] == {"x": 0}


async def test_a_retried_put_adds_nothing_and_other_content_wins(store: EventStore) -> None:
    """A retry (after "not replicated", say) of the same put or of the same overwriting
    writes adds no second event; the same checkpoint id with other content is stored
    again, and reads give the newer."""
    saver = ChatlogSaver(store, project="Agents")
    config = generate_config("t-retry")
    checkpoint = generate_checkpoint(channel_values={"x": 1})
    stored = await saver.aput(config, checkpoint, generate_metadata(step=1), {"x": 1})
    assert await saver.aput(config, checkpoint, generate_metadata(step=1), {"x": 1}) == stored
    for _ in range(2):
        await saver.aput_writes(stored, [("__error__", "boom")], "task-1")
    assert len(await store.read(0)) == 2  # one checkpoint, one write
    await saver.aput(config, checkpoint, generate_metadata(step=2), {"x": 1})
    await saver.aput_writes(stored, [("__error__", "bang")], "task-1")
    assert len(await store.read(0)) == 4
    tup = await saver.aget_tuple(stored)
    assert tup is not None
    assert tup.metadata["step"] == 2
    assert tup.pending_writes == [("task-1", "__error__", "bang")]
