"""Metrics an operator can alert on: latency by route template, lag, workflows, jobs."""

from __future__ import annotations

import asyncio
import re

from chatlog.http import STATE
from chatlog.identity import normalize_project_id
from chatlog.orchestrator import Worker
from tests.helpers import eventually
from tests.http.conftest import post_message


def value(text: str, series: str) -> float | None:
    """The sample of ``series`` (name with its labels, as printed) in ``text``."""
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


async def test_operator_metrics(api) -> None:
    client = await api(start_timeout=0.3)
    sent = await post_message(client, "Metric-Project", "one")
    await post_message(client, "Metric-Project", "two", thread_id=sent["thread_id"])
    # A workflow that times out waiting for start.
    doomed = await (await client.post("/v1/projects/Metric-Project/workflows", json={})).json()
    wid = doomed.get("workflow_id") or doomed["id"]
    # A workflow someone long-polls while it waits for start (its deadline, recorded in
    # the log, is the default start timeout of the node that created it).
    other = await api()
    waited = await (await other.post("/v1/projects/Metric-Project/workflows",
                                     json={})).json()
    wid2 = waited.get("workflow_id") or waited["id"]

    async def scrape() -> str:
        return await (await client.get("/metrics")).text()

    async def timed_out() -> bool:
        doc = await (await client.get(f"/v1/projects/Metric-Project/workflows/{wid}")).json()
        return doc["state"] in {"failed", "timed_out"}

    await eventually(timed_out, timeout=20, what="the workflow to time out")
    text = await eventually(  # counted by the orchestrator; the gauge once projected
        lambda: _when(scrape(), lambda t: value(t, "chatlog_workflow_timeouts_total") == 1.0
                      and value(t, 'chatlog_workflows{state="failed"}') == 1.0),
        timeout=20, what="the timeout to be counted and projected")
    assert isinstance(text, str)
    # Latency by route template and method, never by raw path.
    route = 'route="/v1/projects/{project}/messages"'
    assert value(text, f'chatlog_http_request_duration_seconds_count{{method="POST",{route}}}') \
        == 2.0
    assert "Metric-Project" not in text and sent["thread_id"] not in text
    # No *_created series.
    assert "_created" not in text
    # Appends: latency and group-commit size from the store; events by type from the log.
    assert (value(text, "chatlog_append_duration_seconds_count") or 0) >= 2
    assert (value(text, "chatlog_group_commit_size_count") or 0) >= 1
    assert value(text, 'chatlog_events_total{type="message.appended"}') == 2.0
    assert value(text, 'chatlog_events_total{type="workflow.timed_out"}') == 1.0
    # Lag in events and in seconds; workflows by state.
    assert value(text, "chatlog_projection_lag_events") is not None
    assert value(text, "chatlog_projection_lag_seconds") is not None
    assert value(text, 'chatlog_workflows{state="failed"}') == 1.0

    # A long-poll waiting shows while it waits.
    poll = asyncio.ensure_future(client.get(
        f"/v1/projects/Metric-Project/workflows/{wid2}",
        params={"wait_for": "running", "timeout": "20"}))
    await eventually(
        lambda: _when(scrape(), lambda t: value(t, "chatlog_workflow_long_polls") == 1.0),
        timeout=10, what="the long-poll to be counted")
    assert (await client.post(f"/v1/projects/Metric-Project/workflows/{wid2}/start",
                              json={})).status == 200
    assert (await poll).status == 200
    assert value(await scrape(), "chatlog_workflow_long_polls") == 0.0
    assert value(await scrape(), "chatlog_valkey_restarts_total") == 0.0


async def test_job_metrics(api) -> None:
    client = await api(job_max_deliveries=2, job_lease=5)
    st = client.app[STATE]
    orchestrator = st.services.orchestrator
    project = normalize_project_id("Jobs-Project")
    view = await orchestrator.create_workflow(project)
    wid = getattr(view, "workflow_id", None) or view.id
    await orchestrator.enqueue_job(project, wid, kind="fail", payload={})
    await orchestrator.enqueue_job(project, wid, kind="echo", payload={})

    async def scrape() -> str:
        return await (await client.get("/metrics")).text()

    text = await scrape()
    assert value(text, 'chatlog_jobs{state="waiting"}') == 2.0
    assert value(text, 'chatlog_jobs{state="dead"}') == 0.0

    async def handler(job):  # type: ignore[no-untyped-def]
        if job.kind == "fail":
            raise RuntimeError("no")
        return {}

    worker = Worker(st.store, st.settings, handler)
    task = asyncio.create_task(worker.run())
    try:
        text = await eventually(
            lambda: _when(scrape(), lambda t: value(t, 'chatlog_jobs{state="dead"}') == 1.0
                          and value(t, "chatlog_jobs_dead_lettered_total") == 1.0
                          and value(t, 'chatlog_jobs{state="running"}') == 0.0),
            timeout=20, what="both jobs to finish, the failing one dead-lettered and counted")
    finally:
        await worker.stop()
        await task
    assert isinstance(text, str)
    assert value(text, 'chatlog_jobs{state="waiting"}') == 0.0
    assert value(text, 'chatlog_jobs{state="running"}') == 0.0
    # The failing job: delivered, failed, delivered again (one retry), failed, dead-lettered.
    assert value(text, "chatlog_jobs_failed_total") == 2.0
    assert value(text, "chatlog_jobs_retried_total") == 1.0  # not 3: a retry is counted once


async def _when(scrape, check):  # type: ignore[no-untyped-def]
    text = await scrape
    return text if check(text) else None


def test_every_metric_is_documented() -> None:
    from pathlib import Path

    from chatlog.http.metrics import Metrics

    docs = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    names = {metric.name for metric in Metrics().registry.collect()}
    assert names
    for name in names:
        assert f"`{name}" in docs, f"{name} is not in docs/operations.md"
