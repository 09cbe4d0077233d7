"""One vocabulary: the server serves its event types and states; the console keeps no copy."""

from __future__ import annotations

import re
from pathlib import Path

import chatlog.http
from chatlog.events import TERMINAL, WORKFLOW_STATES, known_types

JS = Path(chatlog.http.__file__).parent / "static" / "js"


async def test_the_vocabulary_is_served_without_a_token(client) -> None:
    resp = await client.get("/v1/vocabulary", headers={"Authorization": ""})
    assert resp.status == 200
    body = await resp.json()
    assert body["event_types"] == known_types()
    assert body["workflow_states"] == [s.value for s in WORKFLOW_STATES]
    assert set(body["terminal_states"]) == {s.value for s in TERMINAL}
    assert set(body["terminal_states"]) <= set(body["workflow_states"])
    assert "message.appended" in body["event_types"]
    assert "workflow.timed_out" in body["event_types"]


async def test_workflows_answer_one_shape_with_workflow_id(client) -> None:
    base = "/v1/projects/Shape/workflows"
    made = await (await client.post(base, json={"workflow_id": "wf-shape"})).json()
    # min_position: the list is the read model, which follows the log a moment behind.
    page = await client.get(base, params={"min_position": made["position"]})
    listed = (await page.json())["workflows"][0]
    assert made["workflow_id"] == listed["workflow_id"] == "wf-shape"
    assert "id" not in made and "id" not in listed
    # The list's row is the one workflow's answer without input, result and history.
    assert set(listed) == set(made) - {"input", "result", "history"}


def test_the_console_keeps_no_copy_of_the_event_types_or_states() -> None:
    event_type = re.compile(r"""["'`]((?:message|workflow|job)\.[a-z_]+)["'`]""")
    for path in sorted(JS.glob("*.js")):
        text = path.read_text()
        # A type the console renders in its own way may be named; a list of them may not.
        named = set(event_type.findall(text))
        assert len(named) <= 3, f"{path.name} keeps its own list of event types: {named}"
        assert not re.search(r"TERMINAL\s*=\s*new Set\(\[", text), \
            f"{path.name} keeps its own list of terminal states"
