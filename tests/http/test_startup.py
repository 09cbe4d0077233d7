"""``chatlog serve`` starts without the work that grows with the log or with the archive.

Start-up reads manifests, the open-wait snapshot and the read model's checkpoint;
it does not import pyarrow (a segment is read only when a reader asks for
archived events) nor sqlite-utils and numpy (a read model created by this code
is not created again). Checked on a real process: the shared libraries it has
mapped (``/proc/<pid>/maps``) say what it imported, without timing anything.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import eventually
from tests.http.serving import Served

pytestmark = pytest.mark.skipif(not Path("/proc/self/maps").exists(),
                                reason="reads /proc/<pid>/maps")


def _mapped(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def _loaded(pid: int) -> dict[str, bool]:
    maps = _mapped(pid)
    return {"pyarrow": "libarrow" in maps, "numpy": "/numpy/" in maps}


def _passes(metrics: str) -> float:
    """``chatlog_archive_passes_total``: the archiver passes begun."""
    for line in metrics.splitlines():
        if line.startswith("chatlog_archive_passes_total"):
            return float(line.split()[-1])
    raise AssertionError("no chatlog_archive_passes_total in /metrics")


@pytest.fixture
def serve(short_tmp: Path) -> Iterator[object]:
    started: list[Served] = []

    def start(data_dir: Path, **env: str) -> Served:
        s = Served(data_dir, **env)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


async def test_a_restart_on_an_archived_log_reads_no_segment_and_creates_no_table(
    serve, short_tmp: Path,
) -> None:
    data = short_tmp / f"s{uuid.uuid4().hex[:6]}"
    env = {"CHATLOG_HOT_EVENTS": "3", "CHATLOG_ARCHIVE_INTERVAL": "0.1"}
    first = serve(data, **env)
    async with aiohttp.ClientSession(first.url) as http:
        for i in range(12):
            resp = await http.post("/v1/projects/Start-Up/messages",
                                   json={"thread_id": "thread-a", "role": "user",
                                         "content": f"m{i}"})
            assert resp.status == 201

        async def archived() -> bool:
            # sealed, published and trimmed from Redis down to the hot window (so the
            # next start's archiver has nothing to seal or to finish)
            metrics = await (await http.get("/metrics")).text()
            ready = await (await http.get("/readyz")).json()
            return ('chatlog_hot_events{partition="0"} 3.0' in metrics
                    and ready["projection"]["events_behind"] == 0)

        await eventually(archived, what="the archiver to seal all but the 3 newest messages "
                                        "and the read model to reach the head")
        # The ids of the sealed events leave Redis after the trim, in the same pass: a
        # stop between the two leaves them for the next start's archiver, which reads
        # the segment. Passes run one after another and are counted as they begin, so
        # once the count is 2 past what it was here, a whole pass began after it: the
        # one that had trimmed has ended, ids included.
        seen = _passes(await (await http.get("/metrics")).text())

        async def a_whole_pass_later() -> bool:
            return _passes(await (await http.get("/metrics")).text()) >= seen + 2

        await eventually(a_whole_pass_later, what="a whole archiver pass after the trim")
    assert first.stop() == 0, first.stderr

    again = serve(data, **env)
    async with aiohttp.ClientSession(again.url) as http:
        assert (await http.get("/readyz")).status == 200
        assert _loaded(again.proc.pid) == {"pyarrow": False, "numpy": False}
        # The first read of archived events opens the segments (and imports pyarrow).
        doc = await (await http.get("/v1/events", params={"limit": 100})).json()
        assert [e["data"]["content"] for e in doc["events"]] == [f"m{i}" for i in range(12)]
        assert _loaded(again.proc.pid)["pyarrow"]
    assert again.stop() == 0, again.stderr
