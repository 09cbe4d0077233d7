"""Erasure over HTTP: DELETE a thread, then the project; reads 404, replay skips the
erased events, the tombstone stays, other projects are untouched, no file keeps
the text; who may erase."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from chatlog.eventstore import EmbeddedValkey
from tests.erasure.test_erasure import files_holding
from tests.helpers import eventually
from tests.http.conftest import TOKENS, bearer, post_message, read_sse


async def test_delete_thread_then_project(api: Any, session_valkey: EmbeddedValkey,
                                          tmp_path: Path) -> None:
    client = await api()
    marker = secrets.token_hex(32)
    kept = secrets.token_hex(32)
    first = await post_message(client, "Blog", f"one {marker}", thread_id="t1")
    await post_message(client, "Blog", f"two {marker}", thread_id="t1")
    await post_message(client, "Blog", f"other {kept}", thread_id="t2")
    resp = await client.post("/v1/projects/Blog/jobs", json={"kind": "k", "payload": {"n": kept}})
    assert resp.status == 201
    shop = await post_message(client, "Shop", "shop stays", thread_id="s1")
    resp = await client.get("/v1/projects/Blog/threads/t1/messages",
                            params={"min_position": shop["position"]})
    assert resp.status == 200

    resp = await client.delete("/v1/projects/Blog/threads/t1")
    assert resp.status == 200, await resp.text()
    report = await resp.json()
    assert report["state"] == "done" and report["scope"] == "thread"
    assert report["events_erased"]["redis"] == 2 and report["read_model_rows"] == 3
    assert report["finished_at"] and report["aof_rewrites"] >= 1
    status = await client.get(resp.headers["Location"])
    assert (await status.json())["erasure_id"] == report["erasure_id"]

    resp = await client.get("/v1/projects/Blog/threads/t1/messages")
    assert resp.status == 404
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    # Replay skips the erased events, keeps the tombstone; a cursor into them still works.
    resp = await client.get("/v1/events", params={"project": "Blog"})
    events = (await resp.json())["events"]
    assert marker not in json.dumps(events)
    threads = [e for e in events if e["aggregate_type"] != "workflow"]
    assert [e["type"] for e in threads] == ["message.appended", "erasure.recorded"]
    assert threads[1]["data"]["scope"] == "thread" and threads[1]["data"]["thread_id"] == "t1"
    assert threads[1]["data"]["events"] == 2  # a count, no content
    resp = await client.get("/v1/events", params={"after": first["position"]})
    assert resp.status == 200
    # The SSE stream from the start skips them too: the same events as the replay.
    stream = await client.get("/v1/events/stream", params={"project": "Blog"})
    got = await read_sse(stream, len(events))
    stream.close()
    assert [d["id"] for _, d in got] == [e["id"] for e in events]
    assert marker not in json.dumps(got)
    assert files_holding(session_valkey.dir, marker) == []
    assert files_holding(tmp_path, marker) == []
    assert files_holding(tmp_path, kept)  # t2 is still there

    resp = await client.delete("/v1/projects/Blog")
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["events_erased"]["redis"] >= 1
    resp = await client.get("/v1/projects/Blog/jobs")
    assert (await resp.json())["jobs"] == []
    resp = await client.get("/v1/projects/Blog/threads")
    assert resp.status == 404  # nothing of the project is left: as one never written to
    assert files_holding(session_valkey.dir, kept) == []
    assert files_holding(tmp_path, kept) == []
    resp = await client.get("/v1/projects/Shop/threads/s1/messages")
    assert [m["content"] for m in (await resp.json())["messages"]] == ["shop stays"]
    # A new message starts a fresh history.
    again = await post_message(client, "Blog", "fresh", thread_id="t1")
    resp = await client.get("/v1/projects/Blog/threads/t1/messages",
                            params={"min_position": again["position"]})
    assert [m["content"] for m in (await resp.json())["messages"]] == ["fresh"]


async def test_only_admin_or_erase_scope_may_erase(api: Any, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tokens": [
        {"token": TOKENS["admin"], "name": "ops", "admin": True},
        {"token": TOKENS["blog"], "read": ["Blog"], "write": ["Blog"]},
        {"token": "privacy-token-01", "name": "dpo", "erase": ["Blog"]},
    ]}))
    client = await api(tokens_file=tokens)
    await post_message(client, "Blog", "hello", thread_id="t1", headers=bearer("admin"))
    resp = await client.delete("/v1/projects/Blog/threads/t1", headers=bearer("blog"))
    assert resp.status == 403
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    resp = await client.delete("/v1/projects/Shop",
                               headers={"Authorization": "Bearer privacy-token-01"})
    assert resp.status == 403
    resp = await client.delete("/v1/projects/Blog/threads/t1",
                               headers={"Authorization": "Bearer privacy-token-01"})
    assert resp.status == 200
    assert (await resp.json())["requested_by"] == "dpo"
    resp = await client.get("/v1/projects/Blog/erasures/nope", headers=bearer("admin"))
    assert resp.status == 404
    resp = await client.delete("/v1/projects/Blog", params={"wait": "soon"},
                               headers=bearer("admin"))
    assert resp.status == 400


async def test_erasing_what_was_never_written_is_refused(api: Any) -> None:
    """A misspelt project or thread is a 404 (nothing recorded, no tombstone), a thread
    id that names no thread (NUL, a null spelling) a 400."""
    client = await api()
    await post_message(client, "Blog", "hello", thread_id="t1")
    resp = await client.delete("/v1/projects/Blog-Projekt")
    assert resp.status == 404, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert (await resp.json())["project_name"] == "Blog-Projekt"
    resp = await client.delete("/v1/projects/Blog/threads/t2")
    assert resp.status == 404
    assert "no thread 't2'" in (await resp.json())["detail"]
    for bad in ("%00", "null"):
        resp = await client.delete(f"/v1/projects/Blog/threads/{bad}")
        assert resp.status == 400, (bad, await resp.text())
        assert resp.headers["Content-Type"].startswith("application/problem+json")
    events = await (await client.get("/v1/events", params={"project": "Blog"})).json()
    assert [e["type"] for e in events["events"]] == ["message.appended"]
    resp = await client.delete("/v1/projects/Blog/threads/t1")
    assert resp.status == 200


async def test_what_is_appended_after_the_answer_is_kept(api: Any) -> None:
    """The answer names the tombstone, also with ``wait=0``: the erasure covers what came
    before it, and a message acknowledged after the answer is kept (an adversarial pass
    found the 202 sent before the tombstone existed, and a later append erased)."""
    client = await api()
    await post_message(client, "Blog", "erased", thread_id="t1")
    resp = await client.delete("/v1/projects/Blog/threads/t1", params={"wait": "0"})
    assert resp.status in (200, 202), await resp.text()
    report = await resp.json()
    assert report["tombstone_position"] is not None
    after = await post_message(client, "Blog", "kept", thread_id="t1")
    async def done() -> bool:
        return (await (await client.get(resp.headers["Location"])).json())["state"] == "done"

    await eventually(done, what="the erasure to finish")
    page = await client.get("/v1/projects/Blog/threads/t1/messages",
                            params={"min_position": after["position"]})
    assert page.status == 200, await page.text()
    assert [m["content"] for m in (await page.json())["messages"]] == ["kept"]
