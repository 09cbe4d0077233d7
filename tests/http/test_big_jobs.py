"""A job's legal 1 MB payload of half a million tiny values is never parsed in the
server's process (issue 15 #9): not to validate it, store it, compare a retry with
it, answer it, project it, nor in the orchestrator's tailer."""

from __future__ import annotations

from typing import Any

import orjson

from tests.http.conftest import counting_big_parses, post_message

PAYLOAD = b'{"z": 1, "a": [' + b",".join([b"0"] * 500_000) + b"]}"


def _body(payload: bytes, job_id: str = "big-1") -> bytes:
    return b'{"kind": "echo", "job_id": "' + job_id.encode() + b'", "payload": ' + payload + b"}"


async def _post(client: Any, raw: bytes) -> Any:
    return await client.post("/v1/projects/P/jobs", data=raw,
                             headers={"Content-Type": "application/json"})


async def test_a_big_job_payload_is_never_parsed_in_the_server_process(client: Any) -> None:
    with counting_big_parses() as big_parses:
        assert len(PAYLOAD) >= 1_000_000
        first = await _post(client, _body(PAYLOAD))
        assert first.status == 201, await first.text()
        again = await _post(client, _body(PAYLOAD))  # the same job again: 200, nothing new
        assert again.status == 200, await again.text()
        other = await _post(client, _body(PAYLOAD.replace(b'"z": 1', b'"z": 2')))
        assert other.status == 409, await other.text()
        assert (await other.json())["status"] == 409
        got = await client.get("/v1/projects/P/jobs/big-1")
        assert got.status == 200
        raw_view = await got.read()
        # The workflow projection has read the job's event when it has read a later one.
        later = await post_message(client, "P", "after-the-job")
        listed = await client.get("/v1/projects/P/workflows",
                                  params={"min_position": later["position"]})
        assert listed.status == 200, await listed.text()
        assert big_parses == []
    view = orjson.loads(raw_view)
    assert view["payload"] == {"z": 1, "a": [0] * 500_000}
    assert view["job_id"] == "big-1" and view["kind"] == "echo"
    assert orjson.loads(await first.read())["payload"] == view["payload"]
    assert orjson.loads(await again.read())["payload"] == view["payload"]


async def test_a_small_job_payload_keeps_its_duplicate_and_conflict_rules(client: Any) -> None:
    body = {"kind": "echo", "job_id": "small-1", "payload": {"b": 1, "a": [1, 2]}}
    first = await client.post("/v1/projects/P/jobs", json=body)
    assert first.status == 201, await first.text()
    assert (await first.json())["payload"] == {"b": 1, "a": [1, 2]}
    reordered = {**body, "payload": {"a": [1, 2], "b": 1}}
    assert (await client.post("/v1/projects/P/jobs", json=reordered)).status == 200
    other = {**body, "payload": {"a": [1, 2], "b": 2}}
    assert (await client.post("/v1/projects/P/jobs", json=other)).status == 409


async def test_a_big_workflow_input_is_never_parsed_in_the_server_process(client: Any) -> None:
    with counting_big_parses() as big_parses:
        raw = b'{"name": "big", "workflow_id": "wf-big", "input": ' + PAYLOAD + b"}"
        created = await client.post("/v1/projects/P/workflows", data=raw,
                                    headers={"Content-Type": "application/json"})
        assert created.status == 201, await created.text()
        answer = await created.read()
        later = await post_message(client, "P", "after-the-workflow")
        listed = await client.get("/v1/projects/P/workflows",
                                  params={"min_position": later["position"]})
        assert listed.status == 200, await listed.text()
        # A create of an existing id folds its history off-process too (a 409).
        again = await client.post("/v1/projects/P/workflows", data=raw,
                                  headers={"Content-Type": "application/json"})
        assert again.status == 409, await again.text()
        assert big_parses == []
    view = orjson.loads(answer)
    expected = {"z": 1, "a": [0] * 500_000}
    assert view["workflow_id"] == "wf-big" and view["state"] == "waiting_for_start"
    assert view["input"] == expected
    assert view["history"][0]["data"]["input"] == expected
    stored = await client.get("/v1/projects/P/workflows/wf-big")
    assert (await stored.json())["input"] == expected
    started = await client.post("/v1/projects/P/workflows/wf-big/start",
                                json={"input": {"y": 2}})
    assert started.status == 200, await started.text()
    assert (await started.json())["input"] == {**expected, "y": 2}


async def test_big_job_and_workflow_bodies_keep_the_strict_rules(client: Any) -> None:
    pad = b" " * 70_000
    for path, raw, field in [
        ("jobs", b'{"kind": "echo", "payload": [1]}' + pad, "payload"),
        ("jobs", b'{"kind": 5, "payload": {}}' + pad, "kind"),
        ("jobs", b'{"kind": "echo", "payload": {"n": 18446744073709551616}}' + pad, "64-bit"),
        ("jobs", b'{"kind": "echo", "payload": {' + pad, "JSON"),
        ("workflows", b'{"input": {"f": [1e400]}}' + pad, "input|JSON"),
        ("workflows", b'{"name": "x", "surprise": 1}' + pad, "surprise"),
    ]:
        resp = await client.post(f"/v1/projects/P/{path}", data=raw,
                                 headers={"Content-Type": "application/json"})
        assert resp.status == 400, (raw[:60], await resp.text())
        assert resp.content_type == "application/problem+json"
        doc = await resp.json()
        fields = {e["field"] for e in doc.get("errors", [])}
        assert any(f in fields or f in doc["detail"] for f in field.split("|")), doc


async def test_listing_jobs_answers_big_payloads_unparsed(client: Any) -> None:
    for job_id in ("big-a", "big-b"):
        assert (await _post(client, _body(PAYLOAD, job_id))).status == 201
    small = await client.post("/v1/projects/P/jobs", json={"kind": "echo", "payload": {"s": 1}})
    assert small.status == 201
    with counting_big_parses() as big_parses:
        listed = await client.get("/v1/projects/P/jobs", params={"state": "pending", "limit": "2"})
        assert listed.status == 200, await listed.text()
        raw_page = await listed.read()
        assert big_parses == []
    page = orjson.loads(raw_page)
    assert [j["job_id"] for j in page["jobs"]][1:] == ["big-b"]
    assert page["jobs"][0]["payload"] == {"s": 1}
    assert page["jobs"][1]["payload"] == {"z": 1, "a": [0] * 500_000}
    assert page["next_cursor"]
    rest = await client.get("/v1/projects/P/jobs",
                            params={"state": "pending", "cursor": page["next_cursor"]})
    assert [j["job_id"] for j in (await rest.json())["jobs"]] == ["big-a"]
