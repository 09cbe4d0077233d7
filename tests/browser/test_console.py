"""The web console in real headless Chromium against a real ``chatlog serve``.

Covers issue 7: conversations survive a refresh; the live events view shows
every event exactly once across a server restart; a workflow is approved by
clicking and another times out on screen; health; tokens. Each main view is
saved as a screenshot under artifacts/screenshots/.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest

from tests.browser.harness import ApiError, Server, screenshot

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api", reason="playwright is not installed").expect
# Generous waits: the machine is shared; a passing test never waits this long.
expect.set_options(timeout=15_000)


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., Server]) -> Server:
    """One server for the module; a 2 s start timeout so a workflow times out on screen."""
    return server_factory(CHATLOG_START_TIMEOUT="2")


def post(server: Server, project: str, content: str, thread: str | None = None,
         role: str = "user") -> dict[str, Any]:
    res: dict[str, Any] = server.call("POST", f"/v1/projects/{quote(project, safe='')}/messages",
                                      {"role": role, "content": content, "thread_id": thread})
    return res


def texts(locator: Any) -> list[str]:
    return [t.strip() for t in locator.all_inner_texts()]


def test_conversations_survive_a_refresh(server: Server, page: Any) -> None:
    page.goto(f"{server.base}/")
    view = page.locator("#view-conversations")
    # Keyboard only: type the project and press Enter.
    view.get_by_label("Project", exact=True).fill("Blog-Project")
    view.get_by_label("Project", exact=True).press("Enter")
    expect(page.locator("#thread-list")).to_contain_text("No conversations yet")

    # Two messages in a new thread, typed and posted in the page.
    view.get_by_label("Message").fill("first message of thread one")
    view.get_by_role("button", name="Post", exact=True).click()
    expect(page.locator("#message-list li")).to_have_count(1)
    view.get_by_label("Message").fill("second message of thread one")
    view.get_by_label("Message").press("Control+Enter")
    expect(page.locator("#message-list li")).to_have_count(2)
    thread_one = page.locator("#thread-title").inner_text().strip()
    assert thread_one.startswith("thread-")

    # Another thread, and a message from an API client using another spelling of the project.
    view.get_by_role("button", name="New thread").click()
    view.get_by_label("Message").fill("a second conversation")
    view.get_by_role("button", name="Post", exact=True).click()
    expect(page.locator("#message-list li")).to_have_count(1)
    accepted = post(server, " BLOG-PROJECT ", "reply from the agent", thread_one, role="assistant")
    assert accepted["thread_id"] == thread_one

    thread_button = page.locator(f'#thread-list button[data-thread-id="{thread_one}"]')
    thread_button.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#message-list li")).to_have_count(3)
    expect(page.locator("#thread-list li.thread")).to_have_count(2)
    # Newest first: thread one got the last message.
    expect(page.locator("#thread-list li.thread").first).to_contain_text("reply from the agent")
    expect(page.locator("#thread-list li.thread").first).to_contain_text("3 messages")
    expect(page.locator("#project-key")).to_have_text(accepted["project"])
    before_threads = texts(page.locator("#thread-list li.thread"))
    before_messages = texts(page.locator("#message-list .content"))
    assert before_messages == ["first message of thread one", "second message of thread one",
                               "reply from the agent"]
    screenshot(page, "conversations")

    page.reload()
    expect(page.locator("#thread-list li.thread")).to_have_count(2)
    expect(page.locator("#message-list li")).to_have_count(3)
    assert texts(page.locator("#thread-list li.thread")) == before_threads
    assert texts(page.locator("#message-list .content")) == before_messages
    assert page.locator("#thread-title").inner_text().strip() == thread_one
    expect(view.get_by_label("Project", exact=True)).to_have_value("Blog-Project")


def workflow_path(project: str, wf: str = "") -> str:
    return f"/v1/projects/{quote(project, safe='')}/workflows" + (f"/{wf}" if wf else "")


def test_workflow_approved_by_clicking_and_another_times_out(server: Server, page: Any) -> None:
    project = "Ops-Flows"
    created = server.call("POST", workflow_path(project), {"name": "needs-approval"})
    wf = created.get("workflow_id") or created["id"]
    server.call("POST", workflow_path(project, wf) + "/start", {})
    server.call("POST", workflow_path(project, wf) + "/approval-requests", {"prompt": "ship it?"})

    page.goto(f"{server.base}/#/workflows?project={project}&workflow={wf}")
    expect(page.locator("#wf-state")).to_have_attribute("data-state", re.compile("approval"))
    expect(page.locator("#wf-countdown")).to_contain_text("times out in")
    screenshot(page, "workflow-awaiting-approval")
    page.get_by_label("Comment").fill("looks good")
    page.get_by_role("button", name="Approve").click()
    expect(page.locator("#wf-state")).to_have_attribute("data-state", re.compile("approved|running|completed"))
    expect(page.locator("#wf-history")).to_contain_text("workflow.approved")
    state = server.call("GET", workflow_path(project, wf))
    approved = [h for h in state["history"] if h["type"] == "workflow.approved"]
    assert approved and approved[0]["data"]["comment"] == "looks good"

    # Created from the page and never started: with a 2 s start timeout it times out on screen.
    page.get_by_label("New workflow name").fill("never-started")
    page.get_by_role("button", name="Create workflow").click()
    expect(page.locator("#wf-title")).to_contain_text("never-started")
    expect(page.locator("#wf-state")).to_have_attribute(
        "data-state", re.compile("timed_out|failed"), timeout=20_000)
    expect(page.locator("#wf-reason")).to_be_visible()
    expect(page.locator("#wf-reason")).to_contain_text("Timed out")
    expect(page.locator("#wf-history")).to_contain_text("workflow.timed_out")
    expect(page.locator("#wf-actions button")).to_have_count(0)
    screenshot(page, "workflow-timed-out")

    # The same workflow's events, live, filtered by workflow.
    page.get_by_role("link", name="Watch this workflow's events live").click()
    expect(page.locator("#ev-status")).to_have_attribute("data-state", "live")
    types = page.locator("#ev-rows tr")
    expect(types).to_have_count(3)
    assert types.evaluate_all("rs => rs.map(r => r.dataset.type)") == [
        "workflow.created", "workflow.timed_out", "workflow.failed"]


def test_health_view(server: Server, page: Any) -> None:
    page.goto(f"{server.base}/#/health")
    expect(page.locator("#ready-badge")).to_have_attribute("data-ok", "true")
    expect(page.locator("#live-badge")).to_have_attribute("data-ok", "true")
    summary = page.locator("#health-summary")
    expect(summary).to_contain_text("Redis")
    expect(summary).to_contain_text("Projection lag")
    expect(page.locator("#health-partitions table tbody tr")).to_have_count(1)
    screenshot(page, "health")


def test_live_events_exactly_once_across_a_server_restart(
        server_factory: Callable[..., Server], page: Any) -> None:
    server = server_factory()
    project = "Live-Project"
    first = post(server, project, "m01")
    thread = first["thread_id"]
    page.goto(f"{server.base}/#/events?project=live-project&thread_id={thread}")
    rows = page.locator("#ev-rows tr")
    expect(page.locator("#ev-status")).to_have_attribute("data-state", "live")
    expect(rows).to_have_count(1)
    for i in range(2, 6):
        post(server, project, f"m{i:02d}", thread)
    expect(rows).to_have_count(5)

    # The server goes away mid-stream; messages keep being appended to its log meanwhile.
    server.stop()
    expect(page.locator("#ev-status")).to_have_text("reconnecting…")
    screenshot(page, "events-reconnecting")
    for i in range(6, 9):
        server.cli("append", project, f"m{i:02d}", "--thread", thread)
    server.start()
    for i in range(9, 13):
        post(server, project, f"m{i:02d}", thread)

    note = page.locator("#ev-note")
    expect(note).to_have_text(re.compile(r"^reconnected, \d+ missed events? received$"))
    expect(rows).to_have_count(12)
    missed = int(re.findall(r"\d+", note.inner_text())[0])
    assert 3 <= missed <= 7  # m06..m08 at least; m09..m12 if they landed before the catch-up
    # The new stream is live: later messages arrive without a reload.
    for i in range(13, 15):
        post(server, project, f"m{i:02d}", thread)
    expect(rows).to_have_count(14)
    contents = [json.loads(a)["content"] for a in rows.locator("td.data").evaluate_all(
        "cells => cells.map(c => c.title)")]
    assert contents == [f"m{i:02d}" for i in range(1, 15)]
    positions = rows.evaluate_all("rs => rs.map(r => r.dataset.position)")
    assert len(set(positions)) == 14
    expect(page.locator("#ev-dups")).to_have_text("0")
    expect(page.locator("#ev-count")).to_have_text("14")
    screenshot(page, "events-reconnected")

    # A refresh replays the same events from the log.
    page.reload()
    expect(rows).to_have_count(14)
    expect(page.locator("#ev-dups")).to_have_text("0")


def test_refused_request_shows_a_clear_message(
        server_factory: Callable[..., Server], page: Any, tmp_path: Any) -> None:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tokens": [
        {"token": "console-admin-token", "name": "ops", "admin": True},
        {"token": "other-project-token", "read": ["Other"], "write": ["Other"]},
    ]}))
    server = server_factory(CHATLOG_TOKENS_FILE=str(tokens))
    with pytest.raises(ApiError) as refused:
        post(server, "Secret", "hidden")
    assert refused.value.status == 401
    server.call("POST", "/v1/projects/Secret/messages",
                {"role": "user", "content": "hello secret", "thread_id": None},
                token="console-admin-token")

    page.goto(f"{server.base}/#/conversations?project=Secret")
    alert = page.locator("#alert")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("401")
    expect(alert).to_contain_text("enter an access token")

    # A token for another project: 403, named as such.
    page.get_by_label("Access token").fill("other-project-token")
    page.get_by_role("button", name="Use token").click()
    expect(alert).to_contain_text("403")
    screenshot(page, "token-refused")

    page.get_by_label("Access token").fill("console-admin-token")
    page.get_by_role("button", name="Use token").click()
    expect(page.locator("#thread-list li.thread")).to_have_count(1)
    expect(alert).to_be_hidden()
    # The live stream gets the token too (EventSource cannot send headers).
    page.goto(f"{server.base}/#/events?project=Secret")
    expect(page.locator("#ev-status")).to_have_attribute("data-state", "live")
    expect(page.locator("#ev-rows tr")).to_have_count(1)
    # Kept for the tab: a refresh still has it.
    page.reload()
    expect(page.locator("#ev-rows tr")).to_have_count(1)
