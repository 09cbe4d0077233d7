"""A Python client for chatlog's HTTP API: :class:`Client` (blocking), :class:`AsyncClient`.

Typed with the server's own pydantic models::

    from chatlog.client import Client

    with Client("http://127.0.0.1:8080", token="...") as c:
        sent = c.append("Blog-Project", "hello")          # retried safely: one event_id per call
        page = c.messages("Blog-Project", sent.thread_id, min_position=sent.position)
        for event in c.stream(project="Blog-Project"):   # resumes by itself after a disconnect
            ...
        wf = c.create_workflow("Blog-Project", name="publish")
        result = c.wait_for("Blog-Project", wf.workflow_id, "running", timeout=5)   # result.reached
        job = c.enqueue_job("Blog-Project", "echo", payload={"n": 1})
"""

from chatlog.client._async import AsyncClient
from chatlog.client._calls import ApiError, ClientError, OutcomeUnknown, Unreachable, WaitResult
from chatlog.client._sync import Client

__all__ = [
    "ApiError",
    "AsyncClient",
    "Client",
    "ClientError",
    "OutcomeUnknown",
    "Unreachable",
    "WaitResult",
]
