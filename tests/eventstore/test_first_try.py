"""A server-made event id's first try looks nothing up (it cannot be a duplicate), so every
append of it after one whose outcome was unknown must look it up: it lands once."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable

import pytest

from chatlog.errors import OutcomeUnknown, StoreUnavailable
from chatlog.eventstore import EmbeddedValkey, EventStore
from tests.helpers import message


async def test_a_server_made_id_appended_again_after_an_unknown_outcome_lands_once(
    valkey_factory: Callable[..., EmbeddedValkey], key_prefix: str
) -> None:
    server = valkey_factory()
    store = await EventStore.open(server.url, prefix=key_prefix, outcome_timeout=0.5)
    try:
        await store.append_one(message(thread_id="t", content="before"))
        ev = message(thread_id="t", content="in doubt")
        assert not ev.id_supplied
        assert server.pid is not None
        os.kill(server.pid, signal.SIGSTOP)
        try:  # the caller gives up waiting (a cancelled request, say): it may land later
            with pytest.raises((TimeoutError, OutcomeUnknown, StoreUnavailable)):
                await asyncio.wait_for(store.append_one(ev), timeout=1)
        finally:
            os.kill(server.pid, signal.SIGCONT)
        again = await store.append_one(ev)  # the same event, as a caller retrying it
        events = await store.read(0, limit=100)
        assert [e.data["content"] for e in events].count("in doubt") == 1
        (landed,) = [e for e in events if e.id == ev.id]
        assert (again.position, again.version) == (landed.position, landed.version)
    finally:
        await store.close()
