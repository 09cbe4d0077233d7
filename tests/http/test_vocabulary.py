"""``GET /v1/vocabulary``: what the console reads instead of keeping copies."""

from __future__ import annotations

from chatlog.events import known_types


async def test_vocabulary_serves_the_one_home_of_types_and_states(client) -> None:
    resp = await client.get("/v1/vocabulary")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["event_types"] == known_types()
    assert "awaiting_approval" in doc["workflow_states"]
    assert set(doc["terminal_states"]) <= set(doc["workflow_states"])
    assert "completed" in doc["terminal_states"]
