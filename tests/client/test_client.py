"""chatlog.client against a real ``chatlog serve``: safe retries, SSE resume, jobs, waits."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chatlog.client import ApiError, AsyncClient, Client
from chatlog.http.models import EventOut
from tests.http.serving import CHATLOG, Served, clean_env

P = "Blog-Project"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(short_tmp: Path) -> Iterator[Served]:
    s = Served(short_tmp / f"c{uuid.uuid4().hex[:6]}")
    yield s
    s.stop()


class Proxy:
    """A TCP proxy on loopback that can swallow the answers of the next N connections
    (the request reaches the server; the client never hears back: a forced timeout)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.swallow = 0
        self.connections = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self._pipe_both(reader, writer)
        finally:
            writer.close()
            self.tasks.discard(task)

    async def _pipe_both(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        swallow = self.swallow > 0
        if swallow:
            self.swallow -= 1
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter | None) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    if dst is not None:
                        dst.write(data)
                        await dst.drain()
            if dst is not None:
                dst.close()

        try:
            await asyncio.gather(pipe(reader, up_w), pipe(up_r, None if swallow else writer),
                                 return_exceptions=True)
        finally:
            up_w.close()

    async def _stop(self) -> None:
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_an_append_retried_after_a_timeout_is_written_once(served: Served) -> None:
    port = int(served.url.rsplit(":", 1)[1])
    proxy = Proxy(port)
    try:
        with Client(f"http://127.0.0.1:{proxy.port}", timeout=1.0, backoff=0.05) as c:
            proxy.swallow = 1
            sent = c.append(P, "exactly once", thread_id="thread-once")
            assert proxy.connections == 2  # the first answer was lost; the retry got one
            assert sent.duplicate  # the server had applied the first attempt
            page = c.messages(P, "thread-once", min_position=sent.position)
            assert [m.content for m in page.messages] == ["exactly once"]
    finally:
        proxy.close()


def test_workflow_commands_and_wait_for(served: Served) -> None:
    with Client(served.url) as c:
        wf = c.create_workflow(P, name="publish")
        early = c.wait_for(P, wf.workflow_id, "running", timeout=0.2)
        assert not early.reached and early.state == "waiting_for_start"  # no exception
        c.start_workflow(P, wf.workflow_id)
        assert c.wait_for(P, wf.workflow_id, "running", timeout=5).reached
        c.request_approval(P, wf.workflow_id, prompt="ok?")
        assert c.approve(P, wf.workflow_id).state == "approved"
        done = c.complete_workflow(P, wf.workflow_id, result={"ok": True})
        ended = c.wait_for(P, wf.workflow_id, ["approved"], timeout=5)
        assert not ended.reached and ended.state == "completed"  # ended elsewhere: returns
        with pytest.raises(ApiError) as err:
            c.cancel_workflow(P, wf.workflow_id)
        assert err.value.status == 409 and err.value.problem["state"] == "completed"
        page = c.list_workflows(P, min_position=done.position)
        assert wf.workflow_id in {w.workflow_id for w in page.workflows}
        events = list(c.replay(project=P, workflow_id=wf.workflow_id, page_size=2))
        assert [e.type for e in events][-1] == "workflow.completed"


def _answers(url: str) -> float:
    """How many answers the server has given (its /metrics), this one not counted."""
    text = httpx.get(f"{url}/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("chatlog_http_responses_total{"))


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), -1.0, True])
async def test_wait_for_refuses_a_timeout_it_cannot_keep(served: Served,
                                                         timeout: float) -> None:
    """NaN made every long-poll ``timeout=0`` and the deadline never came: ~500
    requests a second, forever. A timeout that is no finite number of seconds >= 0
    is a ValueError before any request (both clients)."""
    with Client(served.url) as c:
        wf = c.create_workflow(P)
        before = _answers(served.url)
        with pytest.raises(ValueError, match="timeout"):
            c.wait_for(P, wf.workflow_id, "running", timeout=timeout)
    async with AsyncClient(served.url) as ac:
        with pytest.raises(ValueError, match="timeout"):
            await asyncio.wait_for(ac.wait_for(P, wf.workflow_id, "running", timeout=timeout),
                                   5)
    assert _answers(served.url) == before + 1  # the first /metrics read only


async def test_async_client(served: Served) -> None:
    async with AsyncClient(served.url) as c:
        sent = await c.append(P, "async hello")
        page = await c.messages(P, sent.thread_id, min_position=sent.position)
        assert [m.content for m in page.messages] == ["async hello"]
        wf = await c.create_workflow(P)
        assert not (await c.wait_for(P, wf.workflow_id, "running", timeout=0.1)).reached
        await c.start_workflow(P, wf.workflow_id)
        job = await c.enqueue_job(P, "echo", workflow_id=wf.workflow_id, payload={"a": 1})
        assert (await c.get_job(P, job.job_id)).state == "pending"
        assert job.job_id in {j.job_id for j in (await c.list_jobs(P)).jobs}
        got: list[EventOut] = []
        async for event in c.stream(project=P, workflow_id=wf.workflow_id):
            got.append(event)
            if event.type == "job.enqueued":
                break
        assert [e.type for e in got] == ["workflow.created", "workflow.started", "job.enqueued"]


def test_sse_resumes_across_a_server_restart(short_tmp: Path) -> None:
    data, port = short_tmp / f"r{uuid.uuid4().hex[:6]}", _free_port()
    server = Served(data, "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    got: list[EventOut] = []
    seen_three = threading.Event()

    def consume() -> None:
        with Client(url, backoff=0.05, max_backoff=0.3) as c:
            for event in c.stream(project=P, give_up_after=60):
                got.append(event)
                if len(got) == 3:
                    seen_three.set()
                if len(got) == 6:
                    return

    try:
        with Client(url) as c:
            for i in range(3):
                c.append(P, f"before {i}", thread_id="thread-r")
        reader = threading.Thread(target=consume, daemon=True)
        reader.start()
        assert seen_three.wait(30)
        assert server.stop() == 0, server.stderr
        server = Served(data, "--port", str(port))
        with Client(url) as c:
            for i in range(3):
                c.append(P, f"after {i}", thread_id="thread-r")
        reader.join(60)
        assert not reader.is_alive()
    finally:
        server.stop()
    assert [e.data["content"] for e in got] == [
        "before 0", "before 1", "before 2", "after 0", "after 1", "after 2"]
    assert len({e.id for e in got}) == 6


def test_a_job_enqueued_over_http_is_run_by_chatlog_worker(served: Served, short_tmp: Path) -> None:
    data_dir = served.proc.args[2]
    worker = subprocess.Popen([*CHATLOG, "--data-dir", data_dir, "worker", "--lease", "2"],
                              env=clean_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        with Client(served.url) as c:
            job = c.enqueue_job(P, "echo", payload={"n": 42})
            assert job.state == "pending"
            for _ in range(600):
                view = c.get_job(P, job.job_id)
                if view.state == "done":
                    break
                c.wait_for(P, job.workflow_id, "completed", timeout=0.05)  # a short, real wait
            assert view.state == "done" and view.attempts == 1
            history = c.get_workflow(P, job.workflow_id).history
            completed = [h for h in history if h.type == "job.completed"]
            assert completed and completed[0].data["result"] == {"n": 42}
            assert job.job_id in [j.job_id for j in c.list_jobs(P, state="done").jobs]
    finally:
        worker.terminate()
        worker.wait(20)
