"""``GET /v1/stats``: samples for the console's live charts, taken by the server."""

from __future__ import annotations

from typing import Any

from chatlog.http.stats import STATS
from tests.http.conftest import bearer, post_message


async def test_stats_sample_appends_requests_latency_and_lag(api, tokens_file) -> None:
    client = await api(tokens_file=tokens_file)
    stats = client.server.app[STATS]
    await stats.sample()  # the baseline of the append counter
    for i in range(5):
        await post_message(client, "Blog-Project", f"m{i}", headers=bearer("admin"))
    await stats.sample()
    # The background sampler may have taken some of these: look at every sample since.
    samples = list(stats.samples)
    assert any((s.appends_per_s or 0) > 0 for s in samples)
    assert any(s.requests_per_s > 0 and (s.p99_ms or 0) > 0 for s in samples)
    assert samples[-1].lag_events is not None
    resp = await client.get("/v1/stats", headers=bearer("admin"))
    assert resp.status == 200
    doc: dict[str, Any] = await resp.json()
    assert doc["store"]["status"] == "ok"
    # The archiver keeps its archive under the data dir from the start.
    assert doc["archive"]["status"] in ("ok", "unknown")  # first look in flight
    assert doc["samples"] and doc["samples"][-1]["appends_per_s"] is not None
    # It covers every project: a scoped token may not read it.
    assert (await client.get("/v1/stats", headers=bearer("blog"))).status == 403
    assert (await client.get("/v1/stats")).status == 401


async def test_stats_show_the_archive_once_there_is_one(api) -> None:
    from chatlog.eventstore.archive import Archive
    from chatlog.http import STATE
    from chatlog.http.stats import archive_status

    client = await api()
    settings = client.server.app[STATE].settings
    # The archiver opens <data dir>/archive when serve starts: there is one from the start.
    archive_dir = settings.data_dir / "archive"
    Archive.open(str(archive_dir))
    archive_dir.mkdir(exist_ok=True)
    status = archive_status(settings)
    assert status.status == "ok"
    assert status.detail.startswith("0 segments, 0 events")
    # The sampler looks every ARCHIVE_EVERY seconds and serves what it saw.
    stats = client.server.app[STATS]
    stats.archive = status
    doc = await (await client.get("/v1/stats")).json()
    assert doc["archive"]["status"] == "ok"
