"""``chatlog jobs enqueue / list / show``: jobs from the shell, as the HTTP API shows them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from chatlog.cli import cli
from chatlog.cli.worker import demo_handler
from chatlog.eventstore import EventStore
from chatlog.identity import normalize_project_id
from chatlog.orchestrator import Worker
from chatlog.orchestrator.job_records import read_job
from chatlog.settings import Settings
from tests.helpers import eventually


async def _run_until_done(settings: Settings, job_id: str) -> None:
    assert settings.redis_url is not None
    store = await EventStore.open(settings.redis_url, prefix=settings.key_prefix)
    worker = Worker(store, settings, demo_handler, name="cli-test")
    task = asyncio.create_task(worker.run())
    try:

        async def done() -> bool:
            view = await read_job(store, normalize_project_id("Ops"), job_id)
            return view is not None and view.state == "done"

        await eventually(done, timeout=30, what=f"job {job_id} done")
    finally:
        await worker.stop()
        await asyncio.wait_for(task, 10)
        await store.close()


def test_enqueue_list_show(redis_url: str, key_prefix: str, tmp_path: Path) -> None:
    env = {"CHATLOG_KEY_PREFIX": key_prefix, "CHATLOG_DATA_DIR": str(tmp_path)}
    runner = CliRunner()

    def run(*args: str) -> str:
        out = runner.invoke(cli, ["--redis-url", redis_url, "jobs", *args], env=env)
        assert out.exit_code == 0, out.output
        return out.output

    job = json.loads(run("enqueue", "Ops", "echo", "--payload", '{"n": 1}', "--job-id", "j-1"))
    assert job["job_id"] == "j-1" and job["state"] == "pending" and job["payload"] == {"n": 1}
    listed = [json.loads(line) for line in run("list", "ops", "--state", "pending").splitlines()]
    assert [j["job_id"] for j in listed] == ["j-1"]
    settings = Settings(redis_url=redis_url, key_prefix=key_prefix, data_dir=tmp_path,
                        job_lease=2.0)
    asyncio.run(_run_until_done(settings, "j-1"))
    shown = json.loads(run("show", "OPS", "j-1"))
    assert shown["state"] == "done" and shown["attempts"] == 1
    bad = runner.invoke(cli, ["--redis-url", redis_url, "jobs", "enqueue", "Ops", "echo",
                              "--payload", "[1]"], env=env)
    assert bad.exit_code == 1 and "JSON object" in bad.output
    assert len(bad.output.strip().splitlines()) == 1
    again = runner.invoke(cli, ["--redis-url", redis_url, "jobs", "enqueue", "Ops", "echo",
                                "--job-id", "j-1"], env=env)
    assert again.exit_code == 1 and "exists already" in again.output


def _log_length(redis_url: str, key_prefix: str) -> int:
    async def length() -> int:
        store = await EventStore.open(redis_url, prefix=key_prefix)
        try:
            return (await store.status()).length
        finally:
            await store.close()

    return asyncio.run(length())


def test_a_rejected_job_leaves_no_workflow_behind(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    """A bad --job-id is one line, and no ``job:<kind>`` workflow was created for it first."""
    env = {"CHATLOG_KEY_PREFIX": key_prefix, "CHATLOG_DATA_DIR": str(tmp_path)}
    bad = CliRunner().invoke(cli, ["--redis-url", redis_url, "jobs", "enqueue", "Ops", "echo",
                                   "--job-id", "a/b"], env=env)
    assert bad.exit_code == 1 and "job id" in bad.output
    assert len(bad.output.strip().splitlines()) == 1
    assert _log_length(redis_url, key_prefix) == 0


@pytest.mark.parametrize("payload", ['{"a": 123456789012345678901234567890}', '{"a": NaN}',
                                     '{"a": 1e999}', '{"a": -Infinity}',
                                     '{"a": ' + "[" * 130 + "]" * 130 + "}"])
def test_a_payload_http_would_refuse_is_one_line_and_writes_nothing(
    redis_url: str, key_prefix: str, tmp_path: Path, payload: str
) -> None:
    """As over HTTP: numbers beyond 64 bits or not finite, and nesting past the limit,
    are refused before anything is written (a too-big number was a traceback after the
    job's workflow existed; NaN and 1e999 were stored as null without a word)."""
    env = {"CHATLOG_KEY_PREFIX": key_prefix, "CHATLOG_DATA_DIR": str(tmp_path)}
    bad = CliRunner().invoke(cli, ["--redis-url", redis_url, "jobs", "enqueue", "Ops", "echo",
                                   "--payload", payload], env=env)
    assert bad.exit_code == 1, bad.output
    assert "--payload" in bad.output and len(bad.output.strip().splitlines()) == 1
    appended = CliRunner().invoke(cli, ["--redis-url", redis_url, "append", "Ops", "hi",
                                        "--metadata", payload], env=env)
    assert appended.exit_code == 1, appended.output
    assert "--metadata" in appended.output
    assert len(appended.output.strip().splitlines()) == 1
    assert _log_length(redis_url, key_prefix) == 0
