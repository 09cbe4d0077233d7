"""Property-based run of ``/openapi.json`` against a real ``chatlog serve``: no 500, no
answer outside the documented statuses, media types and schemas. Bounded: a few
examples per operation."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from chatlog.http import endpoints
from chatlog.http.openapi import build, with_document
from tests.http.serving import Served

# The document is generated from the same declarations the server routes from.
ENDPOINTS = with_document(endpoints(), title="chatlog", version="test")
schema = schemathesis.openapi.from_dict(build(ENDPOINTS, title="chatlog", version="test"))
# The SSE stream never ends by design; it is covered by tests/http/test_events.py.
schema = schema.exclude(path="/v1/events/stream")

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def served(short_tmp: Path) -> Iterator[str]:
    server = Served(short_tmp / f"fz{uuid.uuid4().hex[:6]}")
    yield server.url
    code = server.stop()
    assert "unexpected error" not in server.stderr, server.stderr[-2000:]
    assert code == 0


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_openapi_operations_never_fail_or_break_the_schema(case, served: str) -> None:
    if case.query and "timeout" in case.query:
        case.query["timeout"] = 0.05  # long-polls: keep the run bounded
    case.call_and_validate(base_url=served, checks=CHECKS, timeout=15)


def test_an_overlong_url_is_a_414_problem(served: str) -> None:
    """aiohttp's own line limit would answer a plain-text 400; chatlog answers problem+json."""
    import json
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{served}/v1/events?types={'x' * 20_000}", timeout=10)
    assert err.value.code == 414
    assert err.value.headers["Content-Type"].startswith("application/problem+json")
    assert "at most 8192" in json.loads(err.value.read())["detail"]
