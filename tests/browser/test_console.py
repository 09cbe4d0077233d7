"""The web console in real headless Chromium against a real ``chatlog serve``.

Conversations survive a refresh (roles apart, metadata, long threads paged);
workflows are found by state and id and approved with a comment from the
detail panel, another times out on screen; jobs show a dead-lettered one;
live events arrive exactly once across a server restart; health; tokens.
Every page at 1280 and 390 px: no console errors, no serious or critical
axe-core violations, a screenshot under artifacts/screenshots/.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import pytest

from tests.browser.harness import ApiError, Server, screenshot, serious_a11y_violations
from tests.helpers import eventually

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api", reason="playwright is not installed").expect
# Generous waits: the machine is shared; a passing test never waits this long.
expect.set_options(timeout=15_000)


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., Server]) -> Server:
    """One server for the module; a 2 s start timeout so a workflow times out on screen."""
    return server_factory(CHATLOG_START_TIMEOUT="2")


def post(server: Server, project: str, content: str, thread: str | None = None,
         role: str = "user", metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"role": role, "content": content, "thread_id": thread}
    if metadata:
        body["metadata"] = metadata
    res: dict[str, Any] = server.call("POST", f"/v1/projects/{quote(project, safe='')}/messages",
                                      body)
    return res


def texts(locator: Any) -> list[str]:
    return [t.strip() for t in locator.all_inner_texts()]


def workflow_path(project: str, wf: str = "") -> str:
    return f"/v1/projects/{quote(project, safe='')}/workflows" + (f"/{wf}" if wf else "")


def create_workflow(server: Server, project: str, name: str, **body: Any) -> str:
    created = server.call("POST", workflow_path(project), {"name": name, **body})
    return str(created.get("workflow_id") or created["id"])


def test_conversations_survive_a_refresh(server: Server, page: Any) -> None:
    page.goto(f"{server.base}/#/conversations")
    view = page.locator("#view-conversations")
    expect(page.locator("#more-threads")).to_be_hidden()  # no project: no "More threads"
    # Keyboard only: type the project and press Enter.
    view.get_by_label("Project", exact=True).fill("Blog-Project")
    view.get_by_label("Project", exact=True).press("Enter")
    expect(page.locator("#thread-list")).to_contain_text("No conversations yet")

    # Two messages in a new thread, typed and posted in the page.
    view.get_by_label("Message").fill("first message of thread one")
    view.get_by_role("button", name="Post", exact=True).click()
    expect(page.locator("#message-list > li")).to_have_count(1)
    view.get_by_label("Message").fill("second message of thread one")
    view.get_by_label("Message").press("Control+Enter")
    expect(page.locator("#message-list > li")).to_have_count(2)
    thread_one = page.locator("#thread-title").inner_text().strip()
    assert thread_one.startswith("thread-")

    # Another thread, and a reply from an API client using another spelling of the project.
    view.get_by_role("button", name="New thread").click()
    view.get_by_label("Message").fill("a second conversation")
    view.get_by_role("button", name="Post", exact=True).click()
    expect(page.locator("#message-list > li")).to_have_count(1)
    accepted = post(server, " BLOG-PROJECT ", "reply from the agent", thread_one, role="assistant",
                    metadata={"model": "m-1", "tokens": 42})

    thread_button = page.locator(f'#thread-list button[data-thread-id="{thread_one}"]')
    thread_button.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#message-list > li")).to_have_count(3)
    expect(page.locator("#thread-list li.thread")).to_have_count(2)
    expect(page.locator("#thread-list li.thread").first).to_contain_text("reply from the agent")
    expect(page.locator("#thread-list li.thread").first).to_contain_text("3 messages")
    expect(page.locator("#project-key")).to_have_text(accepted["project"])
    # Roles look different; metadata opens in the JSON viewer.
    reply = page.locator("#message-list > li").nth(2)
    expect(reply).to_have_class(re.compile("role-assistant"))
    expect(page.locator("#message-list > li").first).to_have_class(re.compile("role-user"))
    colours = page.locator("#message-list > li").evaluate_all(
        "lis => lis.map(li => getComputedStyle(li).borderLeftColor)")
    assert colours[0] != colours[2]
    reply.get_by_text("Metadata").click()
    expect(reply.locator(".json")).to_contain_text('"m-1"')
    before_threads = texts(page.locator("#thread-list li.thread"))
    before_messages = texts(page.locator("#message-list .content"))
    assert before_messages == ["first message of thread one", "second message of thread one",
                               "reply from the agent"]

    page.reload()
    expect(page.locator("#thread-list li.thread")).to_have_count(2)
    expect(page.locator("#message-list > li")).to_have_count(3)
    assert texts(page.locator("#thread-list li.thread")) == before_threads
    assert texts(page.locator("#message-list .content")) == before_messages
    assert page.locator("#thread-title").inner_text().strip() == thread_one


def test_a_long_thread_opens_at_its_end_and_pages_back(server: Server, page: Any) -> None:
    # Imported history keeps its original time in the metadata (chatlog import does this).
    first = post(server, "Long-Talk", "message 1", metadata={"created_at": "2025-12-01T10:00:00Z"})
    for i in range(2, 131):
        post(server, "Long-Talk", f"message {i}", first["thread_id"],
             role="assistant" if i % 2 else "user")
    page.goto(f"{server.base}/#/conversations?project=Long-Talk&thread={first['thread_id']}")
    items = page.locator("#message-list > li")
    expect(items).to_have_count(100)
    expect(items.first.locator(".content")).to_have_text("message 31")
    expect(items.last.locator(".content")).to_have_text("message 130")
    page.get_by_role("button", name="Load earlier messages").click()
    expect(items).to_have_count(130)
    expect(items.first.locator(".content")).to_have_text("message 1")
    expect(items.first.locator("time")).to_have_attribute("datetime", "2025-12-01T10:00:00Z")
    expect(items.first).to_contain_text("(original time)")
    expect(page.get_by_role("button", name="Load earlier messages")).to_be_hidden()


def test_workflows_filter_by_state_search_by_id_and_approve_with_comment(
        server: Server, page: Any) -> None:
    project = "Ops-Flows"
    wf = create_workflow(server, project, "publish", input={"title": "Event logs 101"})
    server.call("POST", workflow_path(project, wf) + "/start", {})
    server.call("POST", workflow_path(project, wf) + "/approval-requests",
                {"prompt": "Publish 'Event logs 101'?"})
    others = [create_workflow(server, project, f"chore-{i}") for i in range(3)]
    server.call("POST", workflow_path(project, others[0]) + "/start", {})

    page.goto(f"{server.base}/#/workflows?project={project}")
    chip = page.locator('#wf-states button[data-state="awaiting_approval"]')
    expect(chip).to_contain_text("1")
    expect(page.locator('#wf-states button[data-state="running"]')).to_contain_text("1")
    # Filter by state.
    chip.click()
    expect(chip).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#wf-list li.wf")).to_have_count(1)
    expect(page.locator("#wf-list li.wf")).to_contain_text("publish")
    page.locator('#wf-states button[data-state="running"]').click()
    expect(page.locator("#wf-list li.wf")).to_have_count(1)
    expect(page.locator("#wf-list li.wf")).to_contain_text(others[0])
    page.locator('#wf-states button[data-state=""]').click()
    expect(page.locator("#wf-list li.wf")).to_have_count(4)

    # Search by id opens it: the prompt beside Approve / Reject, input, countdown.
    page.get_by_label("Workflow id").fill(wf)
    page.get_by_label("Workflow id").press("Enter")
    expect(page.locator("#wf-list li.wf")).to_have_count(1)
    detail = page.locator("#wf-detail")
    expect(detail).to_be_visible()
    expect(page.locator("#wf-state")).to_have_attribute("data-state", "awaiting_approval")
    expect(page.locator("#wf-approval")).to_contain_text("Publish 'Event logs 101'?")
    expect(page.locator("#wf-input")).to_contain_text('"Event logs 101"')
    expect(page.locator("#wf-countdown")).to_have_text(re.compile(r"^times out in \d+ min \d+ s$"))
    expect(page.locator("#wf-history > li")).to_have_count(3)
    screenshot(page, "workflow-awaiting-approval")
    page.get_by_label("Comment").fill("looks good")
    page.get_by_role("button", name="Approve", exact=True).click()
    expect(page.locator("#wf-state")).to_have_attribute("data-state", "approved")
    expect(page.locator("#wf-approval")).to_be_hidden()
    expect(page.locator("#wf-history > li")).to_have_count(4)
    expect(page.locator("#wf-history > li").last).to_contain_text("comment: looks good")
    state = server.call("GET", workflow_path(project, wf))
    approved = [h for h in state["history"] if h["type"] == "workflow.approved"]
    assert approved and approved[0]["data"]["comment"] == "looks good"


def test_a_workflow_created_on_the_page_times_out_on_screen(server: Server, page: Any) -> None:
    page.goto(f"{server.base}/#/workflows?project=Timeouts")
    page.get_by_text("Create a workflow").click()
    page.get_by_label("Name", exact=True).fill("never-started")
    page.get_by_role("button", name="Create workflow").click()
    expect(page.locator("#wf-title")).to_contain_text("never-started")
    expect(page.locator("#wf-state")).to_have_attribute(
        "data-state", re.compile("timed_out|failed"), timeout=20_000)
    expect(page.locator("#wf-reason")).to_contain_text("Timed out")
    expect(page.locator("#wf-history")).to_contain_text("timed out")
    expect(page.locator("#wf-actions button")).to_have_count(0)
    screenshot(page, "workflow-timed-out")

    # The same workflow's events, newest first.
    page.get_by_role("link", name="This workflow's events").click()
    expect(page.locator("#ev-status")).to_have_attribute("data-state", "live")
    rows = page.locator("#ev-rows tr.event")
    expect(rows).to_have_count(3)
    assert rows.evaluate_all("rs => rs.map(r => r.dataset.type)") == [
        "workflow.failed", "workflow.timed_out", "workflow.created"]


def _dead_letter_one(server: Server, project: str) -> str:
    """Enqueue a job over HTTP and let a worker fail it until it is dead-lettered."""
    from chatlog.eventstore.runtime import open_store
    from chatlog.identity import normalize_project_id
    from chatlog.orchestrator import Worker
    from chatlog.orchestrator.job_records import read_job
    from chatlog.settings import Settings

    try:
        job = server.call("POST", f"/v1/projects/{project}/jobs",
                          {"kind": "render", "payload": {"page": 7}, "max_deliveries": 1})
    except ApiError as exc:
        if exc.status in (404, 405):
            pytest.skip("this server has no jobs API yet")
        raise

    async def work() -> None:
        settings = Settings(data_dir=server.data_dir)
        async with open_store(settings) as opened:
            async def handler(_job: Any) -> None:
                raise RuntimeError("renderer crashed: out of ink")

            worker = Worker(opened.store, settings, handler)
            task = asyncio.create_task(worker.run())

            async def dead() -> bool:  # this job (other tests' jobs may come first)
                view = await read_job(opened.store, normalize_project_id(project),
                                      str(job["job_id"]))
                return view is not None and view.state == "dead"

            await eventually(dead, timeout=20, what="the worker to dead-letter the job")
            await worker.stop()
            await task

    # Playwright's sync API runs an event loop in this thread: the worker gets its own.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, work()).result()
    return str(job["job_id"])


def test_a_list_that_cannot_be_read_shows_no_other_projects_items(
        server: Server, page: Any, expected_console_errors: list[str]) -> None:
    """When another project's list request fails (here a 400 for its name), the previous
    project's workflows and jobs left on screen were taken for its own: a click asked
    for them under the new project (404). An adversarial pass found it."""
    expected_console_errors.append("status of 400")  # the lists asked for
    wf = create_workflow(server, "Ops-Stale", "kept")
    server.call("POST", "/v1/projects/Ops-Stale/jobs", {"kind": "echo"})
    page.goto(f"{server.base}/#/workflows?project=Ops-Stale")
    expect(page.locator("#wf-list li.wf")).to_have_count(2)  # (the job's own, and wf)
    expect(page.locator(f'#wf-list button[data-workflow-id="{wf}"]')).to_have_count(1)
    page.goto(f"{server.base}/#/workflows?project=%00")
    expect(page.locator("#wf-list li.wf")).to_have_count(0)
    expect(page.locator("#wf-list")).to_contain_text("could not be read")
    page.goto(f"{server.base}/#/jobs?project=Ops-Stale")
    expect(page.locator("#jobs-rows tr.job")).to_have_count(1)
    page.goto(f"{server.base}/#/jobs?project=%00")
    expect(page.locator("#jobs-rows tr.job")).to_have_count(0)


def test_jobs_view_shows_a_dead_lettered_job(server: Server, page: Any) -> None:
    job_id = _dead_letter_one(server, "Render-Farm")
    page.goto(f"{server.base}/#/jobs?project=Render-Farm&state=dead")
    row = page.locator(f'#jobs-rows tr.job[data-job-id="{job_id}"]')
    expect(row).to_have_attribute("data-state", "dead")
    expect(row).to_contain_text("dead-lettered")
    expect(row).to_contain_text("out of ink")
    expect(row).to_contain_text("1 / 1")
    screenshot(page, "jobs-dead-lettered")


def test_health_view(server: Server, page: Any) -> None:
    page.goto(f"{server.base}/#/health")
    expect(page.locator("#ready-badge")).to_have_attribute("data-ok", "true")
    expect(page.locator("#store-badge")).to_have_text("ok")
    expect(page.locator("#archive-badge")).to_have_text("ok")  # <data dir>/archive, empty
    expect(page.locator("#charts figure")).to_have_count(5)
    expect(page.locator('#charts .value[data-metric="requests_per_s"]')).not_to_have_text("–")
    expect(page.locator("#health-partitions table tbody tr")).to_have_count(1)


def test_live_events_exactly_once_across_a_server_restart(
        server_factory: Callable[..., Server], page: Any,
        expected_console_errors: list[str]) -> None:
    expected_console_errors.append("ERR_CONNECTION_REFUSED")  # the server is down a while
    server = server_factory()
    project = "Live-Project"
    first = post(server, project, "m01")
    thread = first["thread_id"]
    page.goto(f"{server.base}/#/events?project=live-project&thread_id={thread}")
    rows = page.locator("#ev-rows tr.event")
    expect(page.locator("#ev-status")).to_have_attribute("data-state", "live")
    expect(rows).to_have_count(1)
    for i in range(2, 6):
        fifth = post(server, project, f"m{i:02d}", thread)
    expect(rows).to_have_count(5)

    # The server goes away mid-stream; messages keep being appended to its log meanwhile.
    server.stop()
    expect(page.locator("#ev-status")).to_have_text("reconnecting…")
    for i in range(6, 9):
        server.cli("append", project, f"m{i:02d}", "--thread", thread)
    server.start()
    for i in range(9, 13):
        post(server, project, f"m{i:02d}", thread)
    expect(rows).to_have_count(12)
    expect(page.locator("#ev-status")).to_have_attribute("data-state", "live")
    for i in range(13, 15):
        post(server, project, f"m{i:02d}", thread)
    expect(rows).to_have_count(14)
    data = [t.removeprefix("user: ") for t in texts(rows.locator("td.data"))]
    assert data == [f"m{i:02d}" for i in range(14, 0, -1)]
    assert page.locator("#ev-table").get_attribute("data-duplicates") == "0"

    # A refresh shows the same events, newest first.
    page.reload()
    expect(rows).to_have_count(14)
    assert [t.removeprefix("user: ") for t in texts(rows.locator("td.data"))] == data

    # After an explicit trim the view still opens (at the newest events) and stays live.
    server.cli("trim", "0", fifth["position"], "--yes")
    page.reload()
    expect(rows).to_have_count(10)
    expect(page.locator("#ev-status")).to_have_attribute("data-state", "live")
    expect(page.get_by_role("button", name="Older →")).to_be_disabled()
    post(server, project, "m15", thread)
    expect(rows).to_have_count(11)
    expect(rows.first.locator("td.data")).to_have_text("user: m15")


def test_refused_request_shows_a_clear_message(
        server_factory: Callable[..., Server], page: Any, tmp_path: Any,
        expected_console_errors: list[str]) -> None:
    expected_console_errors += ["status of 401", "status of 403"]
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

    def use_token(token: str) -> None:
        page.locator(".token-box summary").click()
        page.get_by_label("Access token").fill(token)
        page.get_by_role("button", name="Use token").click()

    # A token for another project: 403, named as such.
    use_token("other-project-token")
    expect(alert).to_contain_text("403")
    screenshot(page, "token-refused")

    use_token("console-admin-token")
    expect(page.locator("#thread-list li.thread")).to_have_count(1)
    expect(alert).to_be_hidden()
    # The projects page lists what the token may read.
    page.goto(f"{server.base}/#/projects")
    expect(page.locator("#project-cards .card")).to_have_count(1)
    # The live stream gets the token too (EventSource cannot send headers).
    page.goto(f"{server.base}/#/events?project=Secret")
    expect(page.locator("#ev-status")).to_have_attribute("data-state", "live")
    expect(page.locator("#ev-rows tr.event")).to_have_count(1)
    page.reload()
    expect(page.locator("#ev-rows tr.event")).to_have_count(1)


PAGES = {
    "projects": "#/projects",
    "events": "#/events",
    "workflows": "#/workflows?project=Tour&workflow={wf}",
    "jobs": "#/jobs?project=Tour",
    "conversations": "#/conversations?project=Tour&thread={thread}",
    "health": "#/health",
}
READY = {
    "projects": "#project-cards .card",
    "events": "#ev-rows tr.event",
    "workflows": "#wf-history > li",
    "jobs": "#jobs-note",
    "conversations": "#message-list > li",
    "health": "#charts figure",
}


def test_every_page_at_1280_and_390_px_is_clean_accessible_and_photographed(
        server: Server, browser: Any) -> None:
    thread = post(server, "Tour", "How do I page back through events?")["thread_id"]
    post(server, "Tour", "Use Older and Newer: the cursor keeps your place.", thread,
         role="assistant", metadata={"model": "m-1"})
    post(server, "Tour", '{"tool": "search", "hits": 3}', thread, role="tool")
    wf = create_workflow(server, "Tour", "publish", input={"title": "Event logs 101"})
    server.call("POST", workflow_path("Tour", wf) + "/start", {})
    server.call("POST", workflow_path("Tour", wf) + "/approval-requests",
                {"prompt": "Publish 'Event logs 101'?"})
    server.call("POST", "/v1/projects/Tour/jobs",
                {"kind": "render", "payload": {"page": 1}, "workflow_id": wf})
    problems: list[str] = []
    for width in (1280, 390):
        context = browser.new_context(viewport={"width": width, "height": 860})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc, e=errors: e.append(f"uncaught: {exc}"))
        page.on("console", lambda msg, e=errors: e.append(msg.text) if msg.type == "error" else None)
        try:
            for name, path in PAGES.items():
                page.goto(f"{server.base}/{path.format(wf=wf, thread=thread)}")
                expect(page.locator(READY[name]).first).to_be_visible()
                if name == "events":
                    page.locator("#ev-rows button.expand").first.click()
                    expect(page.locator("#ev-rows .json")).to_be_visible()
                if name == "health":  # the per-partition table fits, no sideways scroll
                    region = page.locator("#health-partitions .scroll-x")
                    expect(region).to_be_visible()
                    sideways = region.evaluate("r => r.scrollWidth - r.clientWidth")
                    if sideways > 1:
                        problems.append(f"health's partition table at {width} px scrolls "
                                        f"{sideways} px sideways")
                scroll = page.evaluate("() => document.documentElement.scrollWidth")
                if scroll > width + 1:
                    problems.append(f"{name} at {width} px is {scroll} px wide")
                for v in serious_a11y_violations(page):
                    problems.append(f"{name} at {width} px: {v}")
                screenshot(page, f"{name}-{width}")
            problems += [f"console at {width} px: {e}" for e in errors]
        finally:
            context.close()
    assert not problems, "\n".join(problems)
