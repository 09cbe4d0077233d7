"""The client against a server that misbehaves (a real HTTP server on loopback that
answers what chatlog never would), and against arguments it cannot send: each is one
of the client's own errors, or a ValueError before any request (adversarial pass)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chatlog.client import AsyncClient, Client, ClientError, OutcomeUnknown, Unreachable


class _Odd(BaseHTTPRequestHandler):
    """``/junk``: a 200 whose body is not the API's JSON; ``/cut``: headers, then the
    connection closes mid-body; ``/v1/events/stream``: SSE data that is not an event."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if "/v1/events/stream" in self.path:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.wfile.write(b"id: 1-0\ndata: {\"not\": \"an event\"}\n\n")
            self.wfile.flush()
            return
        if self.path.startswith("/v1/projects/cut/"):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b'{"threads": [')
            self.close_connection = True
            return
        body = b"<html>a proxy's page</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def odd_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Odd)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_answer_that_is_not_the_apis_is_a_client_error(odd_url: str) -> None:
    with Client(odd_url, retries=1, backoff=0.01) as c:
        with pytest.raises(ClientError, match=r"not .*API"):
            c.threads("any")
        with pytest.raises(ClientError, match=r"not .*API"):
            next(iter(c.stream(project="any")))


async def test_an_answer_that_is_not_the_apis_is_a_client_error_async(odd_url: str) -> None:
    async with AsyncClient(odd_url, retries=1, backoff=0.01) as c:
        with pytest.raises(ClientError, match=r"not .*API"):
            await c.threads("any")


def test_a_read_cut_short_is_unreachable_not_an_unknown_outcome(odd_url: str) -> None:
    """A read has no outcome to be unsure of: after its retries it is Unreachable."""
    with Client(odd_url, retries=1, backoff=0.01) as c:
        with pytest.raises(Unreachable) as err:
            c.threads("cut")
        assert not isinstance(err.value, OutcomeUnknown)


@pytest.mark.parametrize("token", ["a\r\nX-Evil: 1", "t\u00f6ken", "two words", ""])
def test_a_token_no_header_can_carry_is_a_value_error(token: str) -> None:
    """A token with a line break was 'the server did not answer', a non-ASCII one a raw
    UnicodeEncodeError, at the first call; an empty one was no token at all."""
    for make in (Client, AsyncClient):
        with pytest.raises(ValueError, match="token"):
            make("http://127.0.0.1:9", token=token)
