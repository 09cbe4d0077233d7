"""The archive in ``/metrics`` (issue 14, "archive figures when they exist"): what the
archiver sealed, published, trimmed and failed, its hot window, and the hot tier's size."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chatlog.eventstore.archiver import HotWindow
from chatlog.http import STATE
from tests.http.conftest import post_message
from tests.http.test_metrics import value

DOCS = Path(__file__).parents[2] / "docs" / "operations.md"


async def test_archive_metrics_count_what_the_archiver_sealed(api, valkey_factory) -> None:
    server = valkey_factory()  # a log of its own: the hot tier's figures are exact
    # Every bound off: no background passes; the test runs them.
    client = await api(url=server.url, hot_events=0, hot_seconds=0, hot_bytes=0)
    archiver = client.server.app[STATE].services.archiver
    assert archiver is not None
    before = await (await client.get("/metrics")).text()
    assert value(before, "chatlog_archive_events_total") == 0
    assert value(before, "chatlog_archive_passes_total") == 0
    assert value(before, "chatlog_archive_last_success_timestamp_seconds") == 0
    assert value(before, "chatlog_archive_hot_window_events") == 0
    for i in range(5):
        await post_message(client, "Archive-Metrics", f"m{i}")
    text = await (await client.get("/metrics")).text()
    assert value(text, 'chatlog_hot_events{partition="0"}') == 5
    assert (value(text, 'chatlog_hot_oldest_age_seconds{partition="0"}') or -1) >= 0

    archiver.window = HotWindow(events=1, seconds=0.0, bytes=0)  # keep only the newest
    (result,) = await archiver.run_pass()
    assert result.archived == 4
    text = await (await client.get("/metrics")).text()
    assert value(text, "chatlog_archive_events_total") == 4
    assert value(text, "chatlog_archive_segments_total") == result.segments >= 1
    assert value(text, "chatlog_archive_trimmed_total") == result.trimmed == 4
    assert value(text, "chatlog_archive_passes_total") == 1
    assert value(text, "chatlog_archive_failed_passes_total") == 0
    assert (value(text, "chatlog_archive_last_success_timestamp_seconds") or 0) > 0
    assert value(text, "chatlog_archive_hot_window_events") == 1
    assert value(text, 'chatlog_hot_events{partition="0"}') == 1
    # Every series the app serves is documented (the archive's are added by the app).
    undocumented = [name for name in re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE)
                    if f"`{name}" not in DOCS.read_text()]
    assert undocumented == []

    server.stop()  # a pass while Redis is down fails, and is counted
    with pytest.raises(Exception):  # noqa: B017 (whichever error redis-py gives)
        await archiver.run_pass()
    text = await (await client.get("/metrics")).text()
    assert value(text, "chatlog_archive_failed_passes_total") == 1
    assert value(text, "chatlog_archive_passes_total") == 2
    assert value(text, "chatlog_archive_events_total") == 4


def test_the_example_alerts_watch_the_archive() -> None:
    """Alerts for what the issue names (lag seconds, p99 latency, dead letters, Valkey
    restarts) and for the archive (failing archiver, growing hot tail); a dashboard."""
    docs = DOCS.read_text()
    rules = docs[docs.index("## Example alert rules"):]
    for series in ("chatlog_projection_lag_seconds", "histogram_quantile(0.99",
                   "chatlog_jobs_dead_lettered_total", "chatlog_valkey_restarts_total",
                   "chatlog_archive_failed_passes_total", "chatlog_hot_events"):
        assert series in rules, series
    yaml = pytest.importorskip("yaml")
    block = re.search(r"```yaml\n(.*?)```", rules, re.DOTALL)
    assert block is not None
    alerts = {r["alert"] for r in yaml.safe_load(block.group(1))["groups"][0]["rules"]}
    assert {"ChatlogArchiverFailing", "ChatlogHotTailGrowing"} <= alerts
    dashboard = (DOCS.parent / "grafana-dashboard.json").read_text()
    for series in ("chatlog_archive_events_total", "chatlog_archive_failed_passes_total",
                   "chatlog_hot_events", "chatlog_hot_oldest_age_seconds"):
        assert series in dashboard, series


async def test_an_archive_that_cannot_open_is_a_failed_pass(store, tmp_path: Path) -> None:
    from chatlog.errors import ArchiveError
    from chatlog.eventstore.archiver import Archiver

    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the archive should be")
    archiver = Archiver(store, str(blocked / "archive"), HotWindow(events=1, seconds=0, bytes=0))
    for _ in range(2):  # (one line in the archiver's log, not a traceback)
        with pytest.raises(ArchiveError, match="as the archive: Not a directory"):
            await archiver.run_pass()
    assert (archiver.counters.passes, archiver.counters.failed_passes) == (2, 2)
    assert archiver.counters.last_success == 0
