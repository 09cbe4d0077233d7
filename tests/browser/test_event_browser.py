"""The event browser on a log of 200,000 events, in real headless Chromium.

The newest events come first and the first rows do not wait for the log's
length (the time to them is measured and written to
artifacts/browser-timings.json, never asserted); paging back three pages and
forward again shows no gap and no repeat; a live append appears at the top
while the rows being read stay where they are.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.browser.fill import fill_log
from tests.browser.harness import ROOT, Server, screenshot

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api", reason="playwright is not installed").expect
expect.set_options(timeout=15_000)

TOTAL = 200_000
PAGE = 50
TIMINGS = ROOT / "artifacts" / "browser-timings.json"


@pytest.fixture(scope="module")
def big(server_factory: Callable[..., Server]) -> Server:
    server = server_factory()
    seconds = fill_log(server.data_dir, TOTAL, "Bulk")
    record("fill_200k_events_s", round(seconds, 2))
    return server


def record(name: str, value: Any) -> None:
    TIMINGS.parent.mkdir(parents=True, exist_ok=True)
    doc = json.loads(TIMINGS.read_text()) if TIMINGS.exists() else {}
    doc[name] = value
    TIMINGS.write_text(json.dumps(doc, indent=2) + "\n")


def contents(page: Any) -> list[str]:
    return [str(c) for c in page.locator("#ev-rows tr.event td.data").all_inner_texts()]


def positions(page: Any) -> list[str]:
    return [str(p) for p in page.locator("#ev-rows tr.event").evaluate_all(
        "rows => rows.map(r => r.dataset.position)")]


def test_newest_first_and_paging_back_and_forth_on_200k_events(big: Server, page: Any) -> None:
    began = time.perf_counter()
    page.goto(f"{big.base}/#/events")
    first = page.locator("#ev-rows tr.event").first
    expect(first.locator("td.data")).to_have_text(f"user: bulk {TOTAL - 1}")
    seen_after = time.perf_counter() - began
    in_page = page.evaluate(
        "() => performance.getEntriesByName('chatlog:first-rows')[0].startTime")
    record("first_rows_after_navigation_ms", round(in_page, 1))
    record("first_rows_seen_by_the_test_s", round(seen_after, 3))
    expect(page.locator("#ev-status")).to_have_attribute("data-state", "live")
    newest = contents(page)
    assert newest == [f"user: bulk {TOTAL - 1 - i}" for i in range(PAGE)]

    # Three pages back, then forward again: no gap, no repeat.
    pages = [positions(page)]
    for n in range(2, 5):
        page.get_by_role("button", name="Older →").click()
        expect(page.locator("#ev-page")).to_have_text(f"page {n} (older)")
        pages.append(positions(page))
        assert contents(page)[0] == f"user: bulk {TOTAL - 1 - PAGE * (n - 1)}"
    expect(page.locator("#ev-status")).to_have_attribute("data-state", "paused")
    screenshot(page, "events-200k-page-4")
    flat = [p for pg in pages for p in pg]
    assert len(flat) == len(set(flat)) == 4 * PAGE
    api = big.call("GET", f"/v1/events?before=end&limit={4 * PAGE}")
    assert flat == [e["position"] for e in api["events"]]
    for n in (3, 2, 1):
        page.get_by_role("button", name="← Newer").click()
        expect(page.locator("#ev-page")).to_have_text(
            "newest 50" if n == 1 else f"page {n} (older)")
        assert positions(page) == pages[n - 1]
    expect(page.locator("#ev-status")).to_have_attribute("data-state", "live")


def test_a_new_append_shows_at_the_top_without_moving_the_rows_being_read(
        big: Server, page: Any) -> None:
    page.goto(f"{big.base}/#/events?project=Bulk")
    rows = page.locator("#ev-rows tr.event")
    expect(rows).to_have_count(PAGE)
    expect(page.locator("#ev-status")).to_have_attribute("data-state", "live")
    # The reader scrolls down to the 31st row and reads it (the newest rows are above the window).
    reading = rows.nth(30)
    reading.evaluate("row => row.scrollIntoView({ block: 'center' })")
    position = reading.get_attribute("data-position")
    y_before = reading.bounding_box()["y"]
    newest_before = rows.first.get_attribute("data-position")

    accepted = big.call("POST", "/v1/projects/Bulk/messages",
                        {"role": "assistant", "content": "a live one", "thread_id": None})
    expect(rows.first).to_have_attribute("data-position", accepted["position"])
    expect(rows.first.locator("td.data")).to_have_text("assistant: a live one")
    assert rows.nth(1).get_attribute("data-position") == newest_before
    row_now = page.locator(f'#ev-rows tr.event[data-position="{position}"]')
    assert abs(row_now.bounding_box()["y"] - y_before) < 1.0
    expect(page.locator("#ev-new-above")).to_have_text("1 new event above")
    assert page.locator("#ev-table").get_attribute("data-duplicates") == "0"

    # The whole event, in the JSON viewer.
    row_now.get_by_role("button").click()
    viewer = page.locator("#ev-rows tr.json-row .json")
    expect(viewer).to_contain_text('"message.appended"')
    expect(viewer).to_contain_text(position or "")
