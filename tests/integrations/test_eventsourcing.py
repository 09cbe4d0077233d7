"""The eventsourcing module's records are ordinary log events; a data dir works too."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import StoredEvent, Tracking
from eventsourcing.utils import Environment

from chatlog.events import EventsourcingRecorded, EventsourcingTracked
from chatlog.eventstore import EventStore
from chatlog.integrations.eventsourcing import ChatlogFactory


async def _read_all(url: str, prefix: str) -> list:
    store = await EventStore.open(url, prefix=prefix)
    try:
        return await store.read(0)
    finally:
        await store.close()


def test_stored_events_and_tracking_are_log_events(redis_url: str, key_prefix: str) -> None:
    factory = ChatlogFactory(Environment("Bank", {"CHATLOG_REDIS_URL": redis_url,
                                                  "CHATLOG_KEY_PREFIX": key_prefix}))
    try:
        recorder = factory.process_recorder()
        oid = uuid.uuid4()
        state = bytes(range(256))
        ids = recorder.insert_events(
            [StoredEvent(originator_id=oid, originator_version=1, topic="t:A", state=state)],
            tracking=Tracking("Upstream", 7),
        )
        assert ids == [1]
    finally:
        factory.close()
    events = asyncio.run(_read_all(redis_url, key_prefix))
    recorded, tracked = events
    assert recorded.aggregate_type == tracked.aggregate_type == "eventsourcing"
    assert recorded.aggregate_id == f"Bank/{oid}"
    assert recorded.blob == state
    assert recorded.typed_data() == EventsourcingRecorded(
        recorder="Bank", originator_id=str(oid), originator_version=1, topic="t:A",
        notification_id=1)
    assert tracked.typed_data() == EventsourcingTracked(
        recorder="Bank", upstream="Upstream", notification_id=7)
    assert recorded.project_name == "Bank"  # the application's name is the default project


def test_an_application_on_a_data_dir(tmp_path: Path) -> None:
    env = {"PERSISTENCE_MODULE": "chatlog.integrations.eventsourcing",
           "CHATLOG_DATA_DIR": str(tmp_path / "data")}
    app = Application[uuid.UUID](env=env)
    try:
        saved = app.save(Aggregate())
        assert saved[-1].notification.id == 1
        assert app.recorder.max_notification_id() == 1
    finally:
        app.close()
    app = Application[uuid.UUID](env=env)  # the embedded server again, same data
    try:
        assert app.recorder.max_notification_id() == 1
    finally:
        app.close()


def test_applications_sharing_a_data_dir_outlive_the_first_to_close(tmp_path: Path) -> None:
    env = {"PERSISTENCE_MODULE": "chatlog.integrations.eventsourcing",
           "CHATLOG_DATA_DIR": str(tmp_path / "data")}
    first = Application[uuid.UUID](env=env)
    second = Application[uuid.UUID](env={**env, "CHATLOG_PROJECT": "Other"})
    first.save(Aggregate())
    first.close()  # the embedded server this process started stays up for `second`
    try:
        assert second.save(Aggregate())[-1].notification.id == 1
    finally:
        second.close()


_NEVER_CLOSED = """
import sys, uuid
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
app = Application[uuid.UUID](env=dict(arg.split("=", 1) for arg in sys.argv[1:]))
app.save(Aggregate())
print(app.recorder.max_notification_id())
"""  # and no app.close(), as eventsourcing's own examples


def _run_never_closed(env: dict[str, str]) -> str:
    """Run a script whose application is never closed; its output. (It used to hang at
    exit: the application's __del__ waited for a loop thread that no longer ran.)"""
    args = [f"{k}={v}" for k, v in env.items()]
    done = subprocess.run([sys.executable, "-c", _NEVER_CLOSED, *args], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout.strip()


def test_a_script_that_never_closes_its_application_exits(redis_url: str,
                                                          key_prefix: str) -> None:
    env = {"PERSISTENCE_MODULE": "chatlog.integrations.eventsourcing",
           "CHATLOG_REDIS_URL": redis_url, "CHATLOG_KEY_PREFIX": key_prefix}
    assert _run_never_closed(env) == "1"
    assert _run_never_closed(env) == "2"


def test_a_data_dir_application_never_closed_stops_its_server_at_exit(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"PERSISTENCE_MODULE": "chatlog.integrations.eventsourcing",
           "CHATLOG_DATA_DIR": str(data)}
    assert _run_never_closed(env) == "1"
    # stopped as the process exited, not left running as an orphan
    assert (data / "valkey" / "valkey.log").read_text().rstrip().endswith("bye bye...")
    assert _run_never_closed(env) == "2"
