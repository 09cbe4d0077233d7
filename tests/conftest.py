"""Fixtures: real Valkey servers from the bundled binary, real SQLite files.

Factories own what they start and stop it by its pid at teardown.

The event-log contract tests (``tests/eventstore/``) that take ``store`` or
``store_factory`` run twice: on one server (``[single]``) and on a 3-master
Redis Cluster (``[cluster]``, marked ``cluster``). A test that only makes
sense on one server is marked ``single_server``; a test elsewhere opts in with
``also_on_cluster``. Tests that take ``redis_url`` or ``valkey_factory``
themselves stay on one server.
"""

from __future__ import annotations

import inspect
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from chatlog.eventstore import EmbeddedValkey, EventStore
from chatlog.testing import LocalCluster

CONTRACT_DIR = Path(__file__).parent / "eventstore"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "single_server: an event-log contract test that does not run on the cluster"
    )
    config.addinivalue_line(
        "markers", "also_on_cluster: run this store test on the cluster too (outside eventstore/)"
    )


REDIS_SERVER = shutil.which("redis-server")
#: chatlog's default data dir (``Settings.data_dir``, the integrations' factories): a
#: test that lands there runs on a Valkey of its own under the working directory (or a
#: developer's running serve), not on the servers the fixtures started.
DEFAULT_DATA_DIR = Path("data").resolve()


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_DATA_BEFORE] = DEFAULT_DATA_DIR.exists()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workerinput"):  # (xdist: the controller checks, once)
        return
    if not session.config.stash.get(_DATA_BEFORE, True) and DEFAULT_DATA_DIR.exists():
        print(f"\nERROR: a test used chatlog's default data dir {DEFAULT_DATA_DIR} "
              "(created during this run); give it the fixtures' server or a tmp dir")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_DATA_BEFORE = pytest.StashKey[bool]()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run the store contract tests on one server and on the cluster."""
    if "log_backend" not in metafunc.fixturenames:
        return
    direct = set(inspect.signature(metafunc.function).parameters)
    in_contract = CONTRACT_DIR in Path(str(metafunc.definition.path)).parents
    opted_in = metafunc.definition.get_closest_marker("also_on_cluster") is not None
    if not (in_contract or opted_in):
        return
    if metafunc.definition.get_closest_marker("single_server") is not None:
        return
    if not direct & {"store", "store_factory"} or direct & {"redis_url", "valkey_factory"}:
        return
    backends = ["single", pytest.param("cluster", marks=pytest.mark.cluster)]
    if in_contract:
        # The same contract on Redis 7 (Debian's redis-server), so nothing
        # Valkey-only slips onto the default path.
        backends.append(pytest.param("redis7", marks=pytest.mark.skipif(
            REDIS_SERVER is None, reason="redis-server is not installed (dev.py installs it)")))
    metafunc.parametrize("log_backend", backends, indirect=True)


@pytest.fixture(scope="session")
def short_tmp() -> Iterator[Path]:
    """A short temporary dir, so unix socket paths fit in sockaddr_un."""
    with tempfile.TemporaryDirectory(prefix="cl-") as d:
        yield Path(d)


@pytest.fixture
def valkey_factory(short_tmp: Path) -> Iterator[Callable[..., EmbeddedValkey]]:
    """Start Valkey servers (fsync always, as the embedded default); stop them after the test."""
    started: list[EmbeddedValkey] = []

    def start(data_dir: Path | None = None, **kwargs: object) -> EmbeddedValkey:
        d = data_dir or short_tmp / f"v{uuid.uuid4().hex[:8]}"
        server = EmbeddedValkey(d, **kwargs).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def session_valkey(short_tmp: Path) -> Iterator[EmbeddedValkey]:
    """One Valkey for the session; tests isolate themselves with a key prefix each."""
    server = EmbeddedValkey(short_tmp / "session").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def session_cluster(short_tmp: Path) -> Iterator[LocalCluster]:
    """A 3-master cluster, one replica each, formed once (about 3 s), stopped by pid."""
    with LocalCluster(short_tmp / "cluster", masters=3, replicas=1) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def session_redis7(short_tmp: Path) -> Iterator[EmbeddedValkey]:
    """A real Redis (7.x from Debian), started like the embedded default, stopped by pid."""
    assert REDIS_SERVER is not None
    server = EmbeddedValkey(short_tmp / "redis7", binary=Path(REDIS_SERVER)).start()
    yield server
    server.stop()


@pytest.fixture
def cluster_url(session_cluster: LocalCluster) -> str:
    """``redis+cluster://`` URL of the session cluster (isolate with ``key_prefix``)."""
    return session_cluster.url


@pytest.fixture
def log_backend(request: pytest.FixtureRequest) -> str:
    """``single`` (default) or ``cluster``: what ``redis_url`` points at."""
    return str(getattr(request, "param", "single"))


@pytest.fixture
def redis_url(log_backend: str, request: pytest.FixtureRequest) -> str:
    if log_backend == "cluster":
        return str(request.getfixturevalue("cluster_url"))
    if log_backend == "redis7":
        redis7: EmbeddedValkey = request.getfixturevalue("session_redis7")
        return redis7.url
    server: EmbeddedValkey = request.getfixturevalue("session_valkey")
    return server.url


@pytest.fixture
def key_prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def store_factory(
    redis_url: str, key_prefix: str
) -> AsyncIterator[Callable[..., object]]:
    """Open EventStores (default: the session server, this test's prefix); close them after."""
    opened: list[EventStore] = []

    async def open_store(url: str | None = None, **kwargs: object) -> EventStore:
        kwargs.setdefault("prefix", key_prefix)
        s = await EventStore.open(url or redis_url, **kwargs)  # type: ignore[arg-type]
        opened.append(s)
        return s

    yield open_store
    for s in opened:
        await s.close()


@pytest.fixture
async def store(store_factory: Callable[..., object]) -> EventStore:
    return await store_factory()  # type: ignore[no-any-return, misc]
