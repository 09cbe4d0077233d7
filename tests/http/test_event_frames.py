"""SSE frames name their event type; OpenAPI documents Last-Event-ID and each type's data."""

from __future__ import annotations

import asyncio

from chatlog.events import known_types
from tests.http.conftest import post_message


async def test_sse_frames_carry_an_event_line_with_the_type(client) -> None:
    sent = await post_message(client, "Frames", "hello")
    stream = await client.get("/v1/events/stream", params={"project": "Frames"})
    lines: list[str] = []
    async with asyncio.timeout(10):
        while not (lines and lines[-1] == "" and any(x.startswith("data: ") for x in lines)):
            lines.append((await stream.content.readline()).decode().rstrip("\n"))
    stream.close()
    frame = [x for x in lines if x and not x.startswith((":", "retry:"))]
    assert frame[0] == "event: message.appended"
    assert frame[1].startswith("id: ") and sent["message_id"] in frame[2]


async def test_openapi_declares_last_event_id_and_a_schema_per_event_type(client) -> None:
    doc = await (await client.get("/openapi.json")).json()
    op = doc["paths"]["/v1/events/stream"]["get"]
    headers = [p for p in op["parameters"] if p["in"] == "header"]
    assert [h["name"] for h in headers] == ["Last-Event-ID"]
    schema = op["responses"]["200"]["content"]["text/event-stream"]["schema"]
    assert schema == {"$ref": "#/components/schemas/Event"}
    schemas = doc["components"]["schemas"]
    event = schemas["Event"]
    assert event["discriminator"]["propertyName"] == "type"
    mapping = event["discriminator"]["mapping"]
    assert set(mapping) == set(known_types())
    message = schemas[mapping["message.appended"].rsplit("/", 1)[1]]
    data = schemas[message["properties"]["data"]["$ref"].rsplit("/", 1)[1]]
    assert {"thread_id", "role", "content"} <= set(data["properties"])
    assert message["properties"]["type"] == {"const": "message.appended"}
