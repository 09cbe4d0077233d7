"""eventsourcing 9.5's own test cases, unmodified, on chatlog's persistence module.

Each recorder gets a fresh key prefix (an empty store); the recorder suites
also run on the cluster. The imported base classes are deleted at the end so
pytest does not collect them on their own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    ProcessRecorder,
    TrackingRecorder,
)
from eventsourcing.tests.application import ApplicationTestCase, ExampleApplicationTestCase
from eventsourcing.tests.persistence import (
    AggregateRecorderTestCase,
    ApplicationRecorderTestCase,
    InfrastructureFactoryTestCase,
    NonInterleavingNotificationIDsBaseCase,
    ProcessRecorderTestCase,
    TrackingRecorderTestCase,
)
from eventsourcing.tests.projection import EventSourcedProjectionTestCase
from eventsourcing.utils import Environment

from chatlog.integrations.eventsourcing import (
    ChatlogAggregateRecorder,
    ChatlogApplicationRecorder,
    ChatlogFactory,
    ChatlogProcessRecorder,
    ChatlogTrackingRecorder,
)

MODULE = "chatlog.integrations.eventsourcing"

# The suite checks that its own deprecated names still warn.
pytestmark = pytest.mark.filterwarnings("always::DeprecationWarning:eventsourcing")


class _OnChatlog:
    """Points the suite at a real server (one Valkey, or the cluster) and a fresh prefix."""

    backend = "single"
    url: str
    prefix: str
    factories: list[ChatlogFactory]

    @pytest.fixture(autouse=True)
    def _chatlog(self, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
        if self.backend == "cluster":
            self.url = request.getfixturevalue("cluster_url")
        else:
            self.url = request.getfixturevalue("session_valkey").url
        self.prefix = prefix = f"es{uuid.uuid4().hex[:10]}"
        monkeypatch.setenv("PERSISTENCE_MODULE", MODULE)
        monkeypatch.setenv("CHATLOG_REDIS_URL", self.url)
        monkeypatch.setenv("CHATLOG_KEY_PREFIX", prefix)
        self.factories = []
        yield
        for f in self.factories:
            f.close()

    def factory(self) -> ChatlogFactory:
        # An Environment holds only what it is given (an Application adds os.environ;
        # a factory made directly does not): without these it ran on its default data
        # dir, an embedded Valkey under the working directory, not on self.url.
        f = ChatlogFactory(Environment(name=f"app{uuid.uuid4().hex[:6]}", env={
            "CHATLOG_REDIS_URL": self.url, "CHATLOG_KEY_PREFIX": self.prefix}))
        self.factories.append(f)
        return f


class TestAggregateRecorder(_OnChatlog, AggregateRecorderTestCase):
    def create_recorder(self) -> AggregateRecorder:
        return self.factory().aggregate_recorder()


class TestApplicationRecorder(_OnChatlog, ApplicationRecorderTestCase[ApplicationRecorder]):
    def create_recorder(self) -> ApplicationRecorder:
        return self.factory().application_recorder()

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()


class TestTrackingRecorder(_OnChatlog, TrackingRecorderTestCase):
    def create_recorder(self) -> TrackingRecorder:
        return self.factory().tracking_recorder()


class TestProcessRecorder(_OnChatlog, ProcessRecorderTestCase):
    def create_recorder(self) -> ProcessRecorder:
        return self.factory().process_recorder()


class TestNonInterleavingNotificationIDs(_OnChatlog, NonInterleavingNotificationIDsBaseCase):
    def create_recorder(self) -> ApplicationRecorder:
        return self.factory().application_recorder()


# On the cluster too, every case of the suites runs, the timing printouts included.


@pytest.mark.cluster
class TestAggregateRecorderOnCluster(TestAggregateRecorder):
    backend = "cluster"


@pytest.mark.cluster
class TestApplicationRecorderOnCluster(TestApplicationRecorder):
    backend = "cluster"


@pytest.mark.cluster
class TestTrackingRecorderOnCluster(TestTrackingRecorder):
    backend = "cluster"


@pytest.mark.cluster
class TestProcessRecorderOnCluster(TestProcessRecorder):
    backend = "cluster"


@pytest.mark.cluster
class TestNonInterleavingNotificationIDsOnCluster(TestNonInterleavingNotificationIDs):
    backend = "cluster"


# Every batch as one MULTI/EXEC (the path of batches of 10+ events on one server), so
# the suites check that path's atomicity, notification ids and IntegrityError rules too
# (not their timing printouts: test_performance is the same as above).


class _InTransactions(_OnChatlog):
    @pytest.fixture(autouse=True)
    def _every_batch_in_a_transaction(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr("chatlog.integrations._eventsourcing_datastore.MULTI_MIN", 1)

    def test_performance(self) -> None:
        pytest.skip("timing printouts: run once, by the suite above")


class TestApplicationRecorderInTransactions(_InTransactions, TestApplicationRecorder):
    pass


class TestProcessRecorderInTransactions(_InTransactions, TestProcessRecorder):
    pass


class TestNonInterleavingNotificationIDsInTransactions(
    _InTransactions, TestNonInterleavingNotificationIDs
):
    pass


class _TrackingSubclass(ChatlogTrackingRecorder):
    pass


class TestInfrastructureFactory(_OnChatlog, InfrastructureFactoryTestCase[ChatlogFactory]):
    def setUp(self) -> None:
        self.env = Environment("TestCase", {"PERSISTENCE_MODULE": MODULE,
                                            "CHATLOG_REDIS_URL": self.url})
        super().setUp()

    def expected_factory_class(self) -> type[ChatlogFactory]:
        return ChatlogFactory

    def expected_aggregate_recorder_class(self) -> type[AggregateRecorder]:
        return ChatlogAggregateRecorder

    def expected_application_recorder_class(self) -> type[ApplicationRecorder]:
        return ChatlogApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[TrackingRecorder]:
        return ChatlogTrackingRecorder

    def tracking_recorder_subclass(self) -> type[TrackingRecorder]:
        return _TrackingSubclass

    def expected_process_recorder_class(self) -> type[ProcessRecorder]:
        return ChatlogProcessRecorder


class TestApplication(_OnChatlog, ApplicationTestCase):
    pass


class TestExampleApplication(_OnChatlog, ExampleApplicationTestCase):
    expected_factory_topic = f"{MODULE}:ChatlogFactory"


class TestEventSourcedProjection(_OnChatlog, EventSourcedProjectionTestCase):
    pass


del AggregateRecorderTestCase, ApplicationRecorderTestCase, TrackingRecorderTestCase
del ProcessRecorderTestCase, NonInterleavingNotificationIDsBaseCase
del InfrastructureFactoryTestCase, ApplicationTestCase, ExampleApplicationTestCase
del EventSourcedProjectionTestCase
