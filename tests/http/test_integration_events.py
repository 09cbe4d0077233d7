"""The integrations' events over HTTP: replayed with their blob; conversation views skip them."""

from __future__ import annotations

import base64

from langgraph.checkpoint.conformance.test_utils import (
    generate_checkpoint,
    generate_config,
    generate_metadata,
)

from chatlog.http._state import STATE
from chatlog.integrations.langgraph import ChatlogSaver
from tests.http.conftest import post_message


async def test_checkpoints_replay_with_their_blob_and_stay_out_of_conversations(client) -> None:
    store = client.server.app[STATE].store
    saver = ChatlogSaver(store, project="Blog-Project")
    stored = await saver.aput(generate_config("t-1"), generate_checkpoint(channel_values={"a": 1}),
                              generate_metadata(), {"a": 1})
    sent = await post_message(client, "Blog-Project", "after the checkpoint")
    resp = await client.get("/v1/events", params={"types": "langgraph.checkpoint"})
    assert resp.status == 200
    [event] = (await resp.json())["events"]
    assert event["aggregate_type"] == "langgraph"
    assert event["data"]["checkpoint_id"] == stored["configurable"]["checkpoint_id"]
    blob = base64.urlsafe_b64decode(event["blob"] + "=" * (-len(event["blob"]) % 4))
    assert saver.serde.loads_typed((event["data"]["serde"], blob))["checkpoint"]["id"] == \
        stored["configurable"]["checkpoint_id"]
    threads = await client.get("/v1/projects/Blog-Project/threads",
                               params={"min_position": sent["position"]})
    assert [t["thread_id"] for t in (await threads.json())["threads"]] == [sent["thread_id"]]
