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
    assert doc["archive"]["status"] == "not configured"
    assert doc["samples"] and doc["samples"][-1]["appends_per_s"] is not None
    # It covers every project: a scoped token may not read it.
    assert (await client.get("/v1/stats", headers=bearer("blog"))).status == 403
    assert (await client.get("/v1/stats")).status == 401
