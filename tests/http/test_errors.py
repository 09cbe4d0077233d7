"""Every bad input is a problem+json answer with a clear detail; never a 500."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from chatlog.errors import ConfigError
from chatlog.http import TokenRegistry
from chatlog.identity import DEFAULT_PROJECT_NAMESPACE
from chatlog.settings import Settings
from tests.http.conftest import bearer, post_message

PROBLEM = "application/problem+json"
URL = "/v1/projects/Blog-Project/messages"


async def _problem(resp, status: int) -> dict:
    assert resp.status == status, await resp.text()
    assert resp.content_type == PROBLEM
    doc = await resp.json()
    assert doc["status"] == status and doc["title"] and doc["detail"]
    assert "Traceback" not in doc["detail"]
    return doc


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (b"{not json", "body", "not valid JSON"),
        (b"[1, 2]", "body", "object"),
        (b'"text"', "body", "object"),
        (b'{"role": 5, "content": "x"}', "role", "valid string"),
        (b'{"role": "user", "content": ["x"]}', "content", "valid string"),
        (b'{"role": "user", "content": "x", "expected_version": "3"}', "expected_version",
         "valid integer"),
        (b'{"role": "user", "content": "x", "expected_version": -1}', "expected_version",
         "greater than or equal"),
        (b'{"role": "user", "content": "x", "event_id": "nope"}', "event_id", "UUID"),
        (b'{"role": "user", "content": "x", "metadata": []}', "metadata", "object"),
        (b'{"role": "user", "content": "x", "colour": "red"}', "colour", "Extra inputs"),
        (b'{"role": "user"}', "content", "Field required"),
        (b"", "role", "Field required"),
        (b'{"role": "", "content": "x"}', "role", "at least 1"),
        (b'{"role": "u", "content": "x", "metadata": {"n": 123456789012345678901234567890}}',
         "metadata", "64-bit"),
        (b'{"role": "u", "content": "x", "metadata": {"f": [1e400]}}', "metadata", "finite"),
        (b'{"role": "u", "content": "\\ud800"}', "body", "not valid JSON"),
    ],
)
async def test_bad_bodies_are_400_naming_the_field(client, body, field, words) -> None:
    resp = await client.post(URL, data=body, headers={"Content-Type": "application/json"})
    doc = await _problem(resp, 400)
    fields = {e["field"]: e["message"] for e in doc["errors"]}
    assert field in fields, doc
    assert words.lower() in (fields[field] + doc["detail"]).lower()


async def test_bad_project_and_thread_ids_are_400(client) -> None:
    doc = await _problem(await client.post(f"/v1/projects/{'x' * 300}/messages",
                                           json={"role": "u", "content": "c"}), 400)
    assert "256" in doc["detail"]
    doc = await _problem(await client.post("/v1/projects/a%07b/messages",
                                           json={"role": "u", "content": "c"}), 400)
    assert "control" in doc["detail"]
    doc = await _problem(await client.post(URL, json={"role": "u", "content": "c",
                                                      "thread_id": "t\u0000x"}), 400)
    assert "control" in doc["detail"]


@pytest.mark.parametrize(
    ("path", "word"),
    [
        ("/v1/events?after=banana", "after"),
        ("/v1/events?limit=0", "limit"),
        ("/v1/events?limit=abc", "limit"),
        ("/v1/events?colour=red", "colour"),
        ("/v1/events?after=1-0,2-0", "partitions"),
        ("/v1/events?after=99999999999999999999-0", "beyond any position"),
        ("/v1/events?after=18446744073709551615-18446744073709551615", "beyond any position"),
        ("/v1/events/stream?after=99999999999999999999-1", "beyond any position"),
        ("/v1/projects/P/threads?limit=-1", "limit"),
        ("/v1/projects/P/threads?cursor=%%%", "cursor"),
        ("/v1/projects/P/threads?min_position=soon", "min_position"),
        ("/v1/projects/P/threads?min_position=99999999999999-0", "after the end of the log"),
        ("/v1/projects/P/threads/t/messages?after_version=x", "after_version"),
    ],
)
async def test_bad_query_parameters_are_400(client, path, word) -> None:
    doc = await _problem(await client.get(path), 400)
    assert word in doc["detail"]


async def test_unknown_thread_workflow_and_path_are_404(client) -> None:
    await post_message(client, "P", "x")
    doc = await _problem(await client.get("/v1/projects/P/threads/thread-nope/messages"), 404)
    assert "thread-nope" in doc["detail"]
    doc = await _problem(await client.get("/v1/projects/P/workflows/wf-nope"), 404)
    assert "wf-nope" in doc["detail"]
    await _problem(await client.get("/v2/nothing"), 404)
    await _problem(await client.get("/static/nothing.js"), 404)


async def test_wrong_method_is_405(client) -> None:
    doc = await _problem(await client.delete("/v1/events"), 405)
    assert "GET" in doc["detail"]


async def test_body_over_the_limit_is_413(api) -> None:
    client = await api(max_body_bytes=4096)
    doc = await _problem(
        await client.post(URL, json={"role": "user", "content": "x" * 5000}), 413
    )
    assert "large" in doc["detail"]
    small = await post_message(client, "Blog-Project", "x" * 100)
    assert small["version"] == 1


async def test_trimmed_position_is_410(client) -> None:
    posted = [await post_message(client, "P", f"m{i}") for i in range(4)]
    store = client.app[__import__("chatlog.http", fromlist=["STATE"]).STATE].store
    assert await store.trim(0, posted[2]["position"]) == 2
    doc = await _problem(await client.get("/v1/events", params={"after": posted[0]["position"]}),
                         410)
    assert doc["horizon"] == doc["oldest_cursor"] == posted[1]["position"]
    doc = await _problem(
        await client.get("/v1/events/stream", headers={"Last-Event-ID": posted[0]["position"]}),
        410,
    )
    # From the horizon on, replay works.
    resp = await client.get("/v1/events", params={"after": posted[1]["position"]})
    assert [e["position"] for e in (await resp.json())["events"]] == [
        posted[2]["position"], posted[3]["position"]]


async def test_tokens_401_and_403(api, tokens_file) -> None:
    client = await api(tokens_file=tokens_file)
    body = {"role": "user", "content": "x"}
    doc = await _problem(await client.post(URL, json=body), 401)
    assert "token" in doc["detail"]
    assert (await client.post(URL, json=body)).headers["WWW-Authenticate"].startswith("Bearer")
    await _problem(await client.post(URL, json=body, headers={"Authorization": "Bearer nope-nope"}),
                   401)
    await _problem(await client.post(URL, json=body, headers={"Authorization": "Basic abc"}), 401)
    doc = await _problem(await client.post(URL, json=body, headers=bearer("shop")), 403)
    assert "Blog-Project" in doc["detail"]
    doc = await _problem(await client.post(URL, json=body, headers=bearer("reader")), 403)
    ok = await client.post("/v1/projects/BLOG-PROJECT/messages", json=body, headers=bearer("blog"))
    assert ok.status == 201
    ok = await client.post(URL, json=body, headers=bearer("admin"))
    assert ok.status == 201
    # Health, metrics, the OpenAPI document and the console need no token.
    for path in ("/healthz", "/metrics", "/openapi.json", "/"):
        assert (await client.get(path)).status == 200, path


async def test_invalid_tokens_file_is_a_clear_config_error(tmp_path) -> None:
    from chatlog.errors import ConfigError
    from chatlog.http import TokenRegistry
    from chatlog.identity import DEFAULT_PROJECT_NAMESPACE

    bad = tmp_path / "t.json"
    bad.write_text('{"tokens": [{"token": "short"}]}')
    with pytest.raises(ConfigError, match=r"tokens\.0\.token"):
        TokenRegistry.load(bad, DEFAULT_PROJECT_NAMESPACE)
    with pytest.raises(ConfigError, match="cannot read"):
        TokenRegistry.load(tmp_path / "missing.json", DEFAULT_PROJECT_NAMESPACE)


@pytest.mark.parametrize(("entries", "match"), [
    # the same token twice: the last entry won without a word (an admin quietly dropped)
    ([{"token": "same-token-1", "admin": True}, {"token": "same-token-1", "read": ["x"]}],
     "tokens 1 and 2 are the same token"),
    ([{"token": "long-enough-1", "admin": "yes"}], r"tokens\.0\.admin"),  # was taken as true
    ([{"token": "has a space-1"}], r"tokens\.0\.token"),  # no header can carry these
    ([{"token": "line\nbreak-123"}], r"tokens\.0\.token"),
    ([{"token": "long-enough-1", "read": [""]}], r"tokens\.0\.read"),  # was system-master
    ([{"token": "long-enough-1", "write": ["  "]}], r"tokens\.0\.write"),
])
def test_a_tokens_file_that_cannot_mean_what_it_says_is_refused(
    tmp_path: Path, entries: list[dict[str, object]], match: str
) -> None:
    """An adversarial pass found each of these accepted."""
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": entries}))
    with pytest.raises(ConfigError, match=match):
        TokenRegistry.load(path, DEFAULT_PROJECT_NAMESPACE)


def test_an_empty_tokens_file_setting_is_refused() -> None:
    """``CHATLOG_TOKENS_FILE=`` was read as the directory '.'; it is no file name."""
    with pytest.raises(ValidationError, match="tokens_file"):
        Settings(tokens_file="")


async def test_openapi_lists_every_route(client) -> None:
    doc = await (await client.get("/openapi.json")).json()
    routes = {
        (r.method, r.resource.canonical)
        for r in client.app.router.routes()
        if r.method != "HEAD" and r.resource is not None
        and r.resource.canonical.startswith(("/v1", "/healthz", "/readyz", "/metrics", "/openapi"))
    }
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert routes == documented
    post = doc["paths"]["/v1/projects/{project}/messages"]["post"]
    schema_ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = doc["components"]["schemas"][schema_ref.rsplit("/", 1)[1]]
    assert body["additionalProperties"] is False
    assert set(body["required"]) == {"role", "content"}
    assert {"201", "200", "400", "401", "403", "409", "413", "503"} <= set(post["responses"])
