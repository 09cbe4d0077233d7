"""``chatlog worker`` (demo handler), ``chatlog dead-letters`` and the jobs section of status."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from click.testing import CliRunner

from chatlog.cli import cli
from chatlog.cli.worker import demo_handler
from chatlog.eventstore import EventStore
from chatlog.identity import normalize_project_id
from chatlog.orchestrator import Orchestrator, Worker
from chatlog.settings import Settings
from tests.helpers import eventually


async def _dead_letter_one(settings: Settings) -> tuple[str, str]:
    assert settings.redis_url is not None
    store = await EventStore.open(settings.redis_url, prefix=settings.key_prefix)
    try:
        project = normalize_project_id("Ops")
        o = Orchestrator(store, settings)
        wid = (await o.create_workflow(project, start_timeout=60)).workflow_id
        await o.start_workflow(project, wid)
        ok = await o.enqueue_job(project, wid, kind="echo", payload={"a": 1})
        bad = await o.enqueue_job(project, wid, kind="fail", payload={"message": "nope"})
        worker = Worker(store, settings, demo_handler, name="demo")
        task = asyncio.create_task(worker.run())
        try:
            async def both_done() -> bool:
                return len(await o.dead_letters()) >= 1 and worker.processed >= 2

            await eventually(both_done, timeout=30, what="the two jobs done")
        finally:
            await worker.stop()
            await asyncio.wait_for(task, 10)
        view = await o.get_workflow(project, wid)
        completed = [h.data for h in view.history if h.type == "job.completed"]
        assert completed == [{"job_id": ok, "worker": "demo", "result": {"a": 1}}]
        return wid, bad
    finally:
        await store.close()


def test_dead_letters_and_status_show_what_the_workers_did(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    settings = Settings(redis_url=redis_url, key_prefix=key_prefix, data_dir=tmp_path,
                        job_lease=0.5, job_max_deliveries=1)
    wid, bad = asyncio.run(_dead_letter_one(settings))
    env = {"CHATLOG_KEY_PREFIX": key_prefix, "CHATLOG_DATA_DIR": str(tmp_path)}
    runner = CliRunner()
    out = runner.invoke(cli, ["--redis-url", redis_url, "dead-letters"], env=env)
    assert out.exit_code == 0, out.output
    letters = [json.loads(line) for line in out.output.splitlines()]
    assert [(d["job_id"], d["kind"], d["workflow_id"], d["deliveries"]) for d in letters] == [
        (bad, "fail", wid, 1)]
    assert "RuntimeError: nope" in letters[0]["reason"]
    out = runner.invoke(cli, ["--redis-url", redis_url, "status", "--json"], env=env)
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc["jobs"] == [{"partition": 0, "jobs": 2, "pending": 0, "dead_letters": 1}]


def test_worker_help_names_the_demo_kinds() -> None:
    out = CliRunner().invoke(cli, ["worker", "--help"])
    assert out.exit_code == 0
    for kind in ("echo", "sleep", "fail"):
        assert kind in out.output
