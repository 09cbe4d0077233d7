"""``chatlog append``, ``tail``, ``status``, ``trim`` as a user runs them (real processes)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from chatlog.event_build import construct
from chatlog.events import SCHEMA_VERSION, MessageAppended, NewEvent
from chatlog.eventstore import EventStore
from chatlog.eventstore.archive import Archive
from chatlog.identity import normalize_project_id
from tests.helpers import message
from tests.sealing import archiver

CHATLOG = [sys.executable, "-m", "chatlog"]


@pytest.fixture
def run(redis_url: str, key_prefix: str, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    env = {**os.environ, "CHATLOG_REDIS_URL": redis_url, "CHATLOG_KEY_PREFIX": key_prefix,
           "CHATLOG_DATA_DIR": str(tmp_path / "data")}

    def run(*args: str, check: bool = True,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*CHATLOG, *args], env=env, capture_output=True, text=True,
                              timeout=60, input=input)
        if check:
            assert proc.returncode == 0, proc.stderr
        return proc

    return run


def test_append_then_tail_then_status(run: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    first = json.loads(run("append", "Blog-Project", "hello", "--thread", "null").stdout)
    assert first["thread_id"].startswith("thread-") and first["version"] == 1
    second = json.loads(run("append", "blog-project", "again", "--thread", first["thread_id"],
                            "--expected-version", "1").stdout)
    assert second["thread_id"] == first["thread_id"] and second["version"] == 2
    assert second["project"] == first["project"]

    lines = run("tail", "--no-follow").stdout.splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["data"]["content"] for e in events] == ["hello", "again"]
    # resumable: after the first event's cursor comes exactly the second
    resumed = run("tail", "--no-follow", "--after", events[0]["cursor"]).stdout.splitlines()
    assert [json.loads(line)["data"]["content"] for line in resumed] == ["again"]

    status = json.loads(run("status", "--json").stdout)
    assert status["partitions"] == 1 and status["length"] == 2
    assert status["log"][0]["last"] == second["position"]
    assert status["log"][0]["first"] == first["position"]
    human = run("status").stdout
    assert "partitions  1" in human and "events 2" in human


def test_tail_follows_new_events(run: Callable[..., subprocess.CompletedProcess[str]],
                                 redis_url: str, key_prefix: str, tmp_path: Path) -> None:
    env = {**os.environ, "CHATLOG_REDIS_URL": redis_url, "CHATLOG_KEY_PREFIX": key_prefix}
    tailer = subprocess.Popen([*CHATLOG, "tail", "--limit", "3"], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        for i in range(3):
            run("append", "p", f"m{i}")
        out, _ = tailer.communicate(timeout=30)
    finally:
        tailer.kill()
        tailer.wait()
    assert [json.loads(line)["data"]["content"] for line in out.splitlines()] == ["m0", "m1", "m2"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["append", "a\x01b", "x"], "contains control characters"),
        (["append", "p", "x", "--event-id", "not-a-uuid"], "--event-id must be a UUID"),
        (["append", "p", "x", "--metadata", "not json"], "--metadata must be a JSON object:"),
        (["append", "", "x"], "spell it out: system-master"),
        (["append", "  ", "x"], "spell it out: system-master"),
        (["tail", "--no-follow", "--type", "bogus.type"],
         "unknown event type 'bogus.type'; known types: "),
        (["append", "p", "x", "--metadata", "[1]"], "must be a JSON object"),
        (["tail", "--after", "yesterday"], "is not of the form"),
        (["tail", "--after", "\uff11-0"], "is not of the form"),  # fullwidth digits
        (["trim", "0", "bad", "--yes"], "is not of the form"),
        # were tracebacks (an adversarial pass): Redis refused them as stream ids
        (["delete-before", "0", "0-0", "--yes"], "no position of a stream"),
        (["delete-before", "0", "1-99999999999999999999", "--yes"], "no position of a stream"),
        (["--redis-url", "redis://[::1", "status"], "invalid Redis URL"),
        (["--redis-url", "redis://h:99999", "status"], "invalid Redis URL"),
    ],
)
def test_bad_input_is_one_readable_line(run: Callable[..., subprocess.CompletedProcess[str]],
                                        args: list[str], message: str) -> None:
    proc = run(*args, check=False)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    if "--metadata" in args:
        assert "--event-id" not in proc.stderr  # only the wrong option is named


def test_version_conflict_is_one_line(run: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    run("append", "p", "x", "--thread", "t")
    proc = run("append", "p", "y", "--thread", "t", "--expected-version", "0", check=False)
    assert proc.returncode == 1
    assert "expected version 0, current version is 1" in proc.stderr


def test_trim_then_tail_from_a_trimmed_position_is_gone(
    run: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    positions = [json.loads(run("append", "p", str(i)).stdout)["position"] for i in range(4)]
    assert "deleted 2 events" in run("trim", "0", positions[2], "--yes").stdout
    proc = run("tail", "--no-follow", "--after", positions[0], check=False)
    assert proc.returncode == 1 and "was deleted" in proc.stderr
    assert f"oldest cursor still available is {positions[1]}" in proc.stderr


async def test_delete_before_asks_then_tail_without_a_cursor_starts_at_the_oldest_kept(
    run: Callable[..., subprocess.CompletedProcess[str]], store: EventStore
) -> None:
    positions = [(await store.append_one(message("p", content=str(i)))).position
                 for i in range(4)]
    refused = run("delete-before", "0", positions[2], check=False, input="n\n")
    assert refused.returncode == 1 and "Aborted" in refused.stderr
    assert len(run("tail", "--no-follow").stdout.splitlines()) == 4  # nothing was deleted
    assert "deleted 2 events" in run("delete-before", "0", positions[2], input="y\n").stdout
    lines = [json.loads(x) for x in run("tail", "--no-follow").stdout.splitlines()]
    assert [e["position"] for e in lines] == positions[2:]
    resumed = run("tail", "--no-follow", "--after", positions[1]).stdout.splitlines()
    assert [json.loads(x)["data"]["content"] for x in resumed] == ["2", "3"]


def test_embedded_default_end_to_end(tmp_path: Path, short_tmp: Path) -> None:
    """No URL and no server: the command starts a private Valkey under the data dir, stops it."""
    data = short_tmp / "cli-embedded"
    (data / "valkey").mkdir(parents=True)  # a data dir `chatlog serve` created earlier
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATLOG_")}
    env["CHATLOG_DATA_DIR"] = str(data)
    out = subprocess.run([*CHATLOG, "append", "Blog-Project", "hi"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    status = subprocess.run([*CHATLOG, "status", "--json"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert json.loads(status.stdout)["length"] == 1
    assert (data / "valkey" / "aof").is_dir()
    assert not (data / "valkey" / "valkey.pid").exists()  # stopped on exit


async def test_status_shows_each_tier_and_tail_reads_both(
    run: Callable[..., subprocess.CompletedProcess[str]], store: EventStore, tmp_path: Path
) -> None:
    positions = [(await store.append_one(message("p", content=str(i)))).position
                 for i in range(6)]
    archive = Archive.open(str(tmp_path / "data" / "archive"))  # the CLI's default archive
    assert await archiver(store, archive, hot=2, segment=3).run_pass() == 4
    doc = json.loads(run("status", "--json").stdout)
    assert doc["events"] == 6 and doc["length"] == 2
    cold, hot = doc["log"][0]["tiers"]
    assert (cold["tier"], cold["segments"], cold["events"]) == ("archive", 2, 4)
    assert (cold["oldest"], cold["newest"]) == (positions[0], positions[3])
    assert cold["bytes"] > 0 and hot["bytes"] > 0
    assert (hot["tier"], hot["events"], hot["oldest"], hot["newest"]) == (
        "redis", 2, positions[4], positions[5])
    text = run("status").stdout
    assert "events 6 (2 in Redis)" in text
    lines = run("tail", "--no-follow").stdout.splitlines()
    assert [json.loads(x)["position"] for x in lines] == positions
    resumed = run("tail", "--no-follow", "--after", positions[1]).stdout.splitlines()
    assert [json.loads(x)["position"] for x in resumed] == positions[2:]


def test_erase_a_thread_asks_then_reports(
        run: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    first = json.loads(run("append", "Blog", "forget me", "--thread", "t1").stdout)
    run("append", "Blog", "keep me", "--thread", "t2")
    refused = run("erase", "--project", "Blog", "--thread", "t1", check=False)
    assert refused.returncode == 1 and "Aborted" in refused.stderr
    report = json.loads(run("erase", "--project", "Blog", "--thread", "t1", "--yes").stdout)
    assert report["state"] == "done" and report["events_erased"]["redis"] == 1
    tail = run("tail", "--no-follow", "--project", "Blog").stdout
    assert "forget me" not in tail and "keep me" in tail and "erasure.recorded" in tail
    assert first["position"]


@pytest.mark.parametrize("url, message", [
    ("redis://127.0.0.1:1/0?socket_timeout=soon", "socket_timeout must be a positive number"),
    ("http://user:secret@127.0.0.1:1", "must specify one of the following schemes"),
])
def test_a_redis_url_redis_py_cannot_read_is_one_line_without_its_password(
        tmp_path: Path, url: str, message: str) -> None:
    env = {**os.environ, "CHATLOG_REDIS_URL": url, "CHATLOG_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.run([*CHATLOG, "status"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: invalid Redis URL: ") and message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "secret" not in proc.stderr


def test_tail_writes_a_value_older_versions_stored_too_deep_for_orjson(
    run: Callable[..., subprocess.CompletedProcess[str]], redis_url: str, key_prefix: str
) -> None:
    """A big message's metadata 254 levels deep (what the HTTP API stored before its
    depth limit) made ``chatlog tail`` end in a traceback."""
    deep = b'{"d":' + b"[" * 253 + b"]" * 253 + b',"pad":"' + b"a" * 70_000 + b'"}'

    async def plant() -> None:
        store = await EventStore.open(redis_url, prefix=key_prefix)
        try:
            await store.append_one(construct(NewEvent, {
                "id": uuid.uuid4(), "id_supplied": False, "type": MessageAppended.event_type,
                "project": normalize_project_id("Legacy"), "project_name": "Legacy",
                "aggregate_type": "thread", "aggregate_id": "t-1",
                "data": {"thread_id": "t-1", "role": "user", "content": "old",
                         "metadata": orjson.Fragment(deep)},
                "schema_version": SCHEMA_VERSION, "blob": None}))
        finally:
            await store.close()

    asyncio.run(plant())
    proc = run("tail", "--no-follow", "--project", "Legacy")
    (line,) = proc.stdout.splitlines()
    assert orjson.dumps(orjson.loads(line)["data"]["metadata"]) == deep


@pytest.mark.parametrize(("option", "env", "message"), [
    (["--data-dir", "{file}"], {}, "as the data dir: it is not a directory"),
    ([], {"CHATLOG_ARCHIVE_URL": "{file}"}, "as the archive: it is not a directory"),
    ([], {"CHATLOG_ARCHIVE_URL": "/proc/no-archive-here"}, "as the archive: "),
    ([], {"CHATLOG_LOG_LEVEL": "junk"}, "invalid setting log_level"),
])
def test_serve_on_a_place_it_cannot_use_says_so_in_one_line(
    tmp_path: Path, option: list[str], env: dict[str, str], message: str
) -> None:
    """These were tracebacks from ``chatlog serve`` (an adversarial pass)."""
    afile = tmp_path / "a-file"
    afile.write_text("")
    fill = {k: v.format(file=afile) for k, v in env.items()}
    proc = subprocess.run(
        [*CHATLOG, *[o.format(file=afile) for o in option], "serve", "--port", "0"],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("CHATLOG_")},
             "CHATLOG_DATA_DIR": str(tmp_path / "data"), **fill},
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
