"""A persistence module for the ``eventsourcing`` library, on chatlog's log.

::

    PERSISTENCE_MODULE=chatlog.integrations.eventsourcing
    CHATLOG_REDIS_URL=redis://127.0.0.1:6379/0     # or CHATLOG_DATA_DIR=./data
    CHATLOG_PROJECT=Bank                           # default: the application's name

Every stored event is an ``eventsourcing.recorded`` event of the aggregate
``<project>/eventsourcing/<recorder>/<originator id>`` (its state as the
event's binary ``blob``), and every tracking record an ``eventsourcing.tracked``
event: ordinary log events that replay, archive and migrate with the rest.
Reads find the entries the archiver moved out of Redis in the archive tier
(the recorders' index keys stay in Redis).

One atomic step per write checks ``(originator_id, originator_version)``
for conflicts (also inside the batch) and the tracking position, assigns
contiguous notification ids (1, 2, 3... per application, in commit order),
adds the entries and updates the indexes: a script, or for batches of 10 or
more on one server, a MULTI/EXEC under WATCH (``_eventsourcing_multi``). All
of an application's keys carry its partition's hash tag: one slot, so this
works on a cluster too.

The recorders are blocking (the library calls them from many threads): they
use pooled connections that make threads wait for one when all are in use
(on one plain server, raw sockets for the writes and notification reads,
``_wire``; else redis-py's blocking client; under ``ack=replicated`` a write
goes through the store's acknowledgement path on the factory's loop instead:
answered once replicated, moving the committed position);
subscriptions tail the log on an event loop of the factory's own thread,
never on ``chatlog serve``'s.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    IntegrityError,
    ListenNotifySubscription,
    Notification,
    ProcessRecorder,
    StoredEvent,
    Subscription,
    Tracking,
    TrackingRecorder,
)
from eventsourcing.utils import Environment, EnvType, resolve_topic

from chatlog.events import (
    EventsourcingRecorded,
    EventsourcingTracked,
    aggregate_key,
)
from chatlog.eventstore.codec import BLOB_MARK, START, Cursor, split_body
from chatlog.eventstore.store import EventStore
from chatlog.integrations._eventsourcing_datastore import Datastore
from chatlog.integrations._eventsourcing_multi import Memo, Target, Tracked
from chatlog.integrations._eventsourcing_reads import Missed, Reader
from chatlog.integrations._eventsourcing_rows import rows
from chatlog.integrations._eventsourcing_scripts import notifications_key
from chatlog.integrations._runtime import (
    digest,
    event_body,
)

_RECORDED: str = EventsourcingRecorded.event_type
#: Notification ids and list indexes stay below what Redis takes (2**63).
_MAX_ID = 2**62


def _decode(body: bytes) -> tuple[dict[str, Any], bytes]:
    if body[:1] == BLOB_MARK:  # always, as the insert script writes them
        end = 5 + int.from_bytes(body[1:5], "big")
        data: dict[str, Any] = orjson.loads(body[5:end])["d"]
        return data, body[end:]
    doc, blob = split_body(body)
    data = orjson.loads(doc)["d"]
    return data, blob or b""


class ChatlogRecorder:
    """What every recorder has: the datastore and its name (its keys' namespace)."""

    def __init__(self, datastore: Datastore, name: str) -> None:
        self.datastore = datastore
        self.name = name
        self.base = datastore.base(name)
        keys = datastore.store.keys
        p = datastore.partition
        self._log = keys.log(p)
        self._versions = keys.versions(p)
        self._sequence = f"{self.base}:seq"
        self._notifications = notifications_key(self.base)
        self._tracking = f"{self.base}:t"
        project = datastore.project.key
        self._target = Target(
            log=self._log, versions=self._versions, sequence=self._sequence,
            notifications=self._notifications, tracking=self._tracking,
            project_index=keys.project_index(p, project), base=self.base,
            record_type=_RECORDED, aggregate_prefix=f"{project}/eventsourcing/{name}/",
            index_prefix=keys.aggregate_index(p, ""),
        )
        self._lock = threading.Lock()
        self._memo = Memo()
        self._listeners: set[threading.Event] = set()

    def _aggregate(self, tail: str) -> tuple[str, str]:
        aggregate = aggregate_key(self.datastore.project.key, "eventsourcing",
                                  f"{self.name}/{tail}")
        return aggregate, self.datastore.store.keys.aggregate_index(
            self.datastore.partition, aggregate)

    def _insert(
        self, stored_events: Sequence[StoredEvent], *, application: bool,
        tracking: Tracking | None = None,
    ) -> list[int]:
        project = self.datastore.project
        tracked: Tracked | None = None
        if tracking is not None:
            aggregate, index = self._aggregate(f"tracking/{tracking.application_name}")
            eid, type_, _, body = event_body(
                project, "eventsourcing", f"{self.name}/tracking/{tracking.application_name}",
                EventsourcingTracked(recorder=self.name, upstream=tracking.application_name,
                                     notification_id=tracking.notification_id),
                None,
            )
            tracked = (tracking.application_name, tracking.notification_id, eid, type_,
                       aggregate, body, index)
        batch = rows(project.display, self.name, stored_events, application, digest,
                     self.datastore.originator_id_type == "uuid")
        reply = self.datastore.insert(self._target, batch, tracked, application, self._memo)
        status, detail = reply
        if status == "conflict":
            s = stored_events[int(detail)]
            raise IntegrityError(
                f"stored event {s.originator_id} version {s.originator_version} exists "
                f"already in {self.name!r} (or twice in this batch)"
            )
        if status == "tracking":
            assert tracking is not None
            raise IntegrityError(
                f"tracking {tracking.application_name} notification {tracking.notification_id} "
                f"is not after the recorded {int(detail)} in {self.name!r}"
            )
        for listener in list(self._listeners):
            listener.set()
        nids: list[int] = detail
        return nids

    def _select_events(
        self, originator_id: uuid.UUID | str, *, gt: int | None, lte: int | None, desc: bool,
        limit: int | None,
    ) -> list[StoredEvent]:
        okey = f"{self.base}:o:{digest(str(originator_id))}"
        low, high = f"({gt}" if gt is not None else "-inf", lte if lte is not None else "+inf"
        page: dict[str, Any] = {} if limit is None else {"start": 0, "num": limit}
        redis = self.datastore.redis
        if desc:
            positions = redis.zrevrangebyscore(okey, high, low, **page)
        else:
            positions = redis.zrangebyscore(okey, low, high, **page)
        # positions grow with versions: read the span in ascending order
        ascending = positions[::-1] if desc else positions
        bodies = dict(zip(ascending, self.datastore.bodies(self._log, ascending), strict=True))
        out = []
        for position in positions:
            body = bodies[position]
            if body is None:
                continue
            data, state = _decode(body)
            out.append(StoredEvent(
                originator_id=self.datastore.originator_id(data["originator_id"]),
                originator_version=int(data["originator_version"]),
                topic=data["topic"], state=state,
            ))
        return out

    def _max_tracking_id(self, application_name: str) -> int | None:
        raw = self.datastore.redis.hget(self._tracking, application_name)
        return None if raw is None else int(raw)


class ChatlogAggregateRecorder(ChatlogRecorder, AggregateRecorder):
    """Stored events of aggregates (snapshots too): insert a batch atomically, select."""

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        if stored_events:
            self._insert(stored_events, application=False)
        return None

    def select_events(
        self,
        originator_id: uuid.UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        return self._select_events(originator_id, gt=gt, lte=lte, desc=desc, limit=limit)


class ChatlogApplicationRecorder(ChatlogAggregateRecorder, ApplicationRecorder):
    """Aggregate events plus the application sequence (contiguous notification ids)."""

    def __init__(self, datastore: Datastore, name: str) -> None:
        super().__init__(datastore, name)
        #: notification id -> log position, of the first and last notifications of
        #: recent reads (a notification's position never changes)
        self._positions: dict[int, bytes] = {}
        self._reader = Reader(datastore.originator_id)
        datastore.check_notifications(self._sequence, self._notifications, name)

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        tracking: Tracking | None = kwargs.get("tracking")
        if not stored_events and tracking is None:
            return []
        return self._insert(stored_events, application=True, tracking=tracking)

    def _after(self, start: int, inclusive: bool) -> str | None:
        """A lower bound of the log positions of notifications from ``start`` on, if a
        read met them before: readers that follow an application read on from where
        they stopped, so they find the bodies in the same round trip."""
        first = start if inclusive else start + 1
        known = self._positions.get(first - 1)
        if known is not None:
            return "(" + known.decode()
        known = self._positions.get(first)
        return None if known is None else known.decode()

    def _remember(self, *found: tuple[int, bytes]) -> None:
        if len(self._positions) > 4096:
            self._positions.clear()
        self._positions.update(found)

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        first = 1 if start is None else start if inclusive_of_start else start + 1
        first = max(first, 1)
        if first > _MAX_ID:
            return []  # past any id (Redis takes list indexes below 2**63)
        limit, stop = min(limit, _MAX_ID), None if stop is None else min(stop, _MAX_ID)
        want = {t.encode() for t in topics}
        after = None  # (the span after it is read with COUNT limit: pages up to 1,000)
        if not want and start is not None and limit <= 1000 and self.datastore.single:
            after = self._after(start, inclusive_of_start)
        span: dict[bytes, Any] = {}
        out: list[Notification | None] = []
        missed: list[tuple[int, Missed]] = []
        ends: list[tuple[int, bytes]] = []  # (id, position) of the first and the last
        index = first - 1  # the list's element of notification ``first``
        while len(out) < limit:
            chunk = 500 if want else limit - len(out)
            last = index + chunk - 1 if stop is None else min(index + chunk, stop) - 1
            if last < index:
                break
            if after is not None:  # one round trip for the notifications and their span
                members, span = self.datastore.listed_and_span(
                    self._notifications, index, last, self._log, after)
            else:
                members = self.datastore.listed(self._notifications, index, last)
            seen, head, tail = self._reader.pick(members, index, want, limit - len(out), span,
                                                 out, missed)
            if head is not None and tail is not None:
                ends[:] = [ends[0] if ends else head, tail]
            index += seen
            if index <= last or after is not None:  # the list ended (or one span only)
                break
        if ends:
            self._remember(ends[0], ends[-1])
        if not missed:
            return out  # type: ignore[return-value]  # (no None in it)
        positions = [m[1][1] for m in missed]
        return self._reader.fill(out, missed, self.datastore.bodies(self._log, positions))

    def max_notification_id(self) -> int | None:
        raw = self.datastore.redis.get(self._sequence)
        return int(raw) if raw and int(raw) > 0 else None

    def subscribe(
        self, gt: int | None = None, topics: Sequence[str] = ()
    ) -> Subscription[ApplicationRecorder]:
        return ChatlogSubscription(self, gt=gt, topics=topics)


class ChatlogSubscription(ListenNotifySubscription[ChatlogApplicationRecorder]):
    """New notifications as they are recorded, in this process or any other.

    The log's head is read before the first select, then a tail from that
    position wakes the puller whenever this recorder's entries arrive: an
    insert between the two is never missed.
    """

    def __init__(
        self, recorder: ChatlogApplicationRecorder, gt: int | None = None,
        topics: Sequence[str] = (),
    ) -> None:
        ds = recorder.datastore
        head = ds.run(ds.store.head(ds.partition))
        prefix = aggregate_key(ds.project.key, "eventsourcing", f"{recorder.name}/").encode()
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        recorder._listeners.add(self._has_been_notified)
        cursor = Cursor([START] * ds.store.partitions).advanced(ds.partition, head)
        self._watch = ds.runner.submit(
            self._watch_log(ds.store, cursor, ds.partition, prefix))

    async def _watch_log(
        self, store: EventStore, cursor: Cursor, partition: int, prefix: bytes
    ) -> None:
        async for batch in store.tail_raw(cursor, partitions=[partition], block=0.25):
            if any(fields.get(b"a", b"").startswith(prefix) for _, _, fields in batch):
                self._has_been_notified.set()

    def stop(self) -> None:
        super().stop()
        self._recorder._listeners.discard(self._has_been_notified)
        self._watch.cancel()
        with contextlib.suppress(BaseException):
            self._watch.result(5)


class ChatlogTrackingRecorder(ChatlogRecorder, TrackingRecorder):
    """Tracking records: the last notification id processed per upstream application."""

    def insert_tracking(self, tracking: Tracking) -> None:
        self._insert([], application=False, tracking=tracking)

    def max_tracking_id(self, application_name: str) -> int | None:
        return self._max_tracking_id(application_name)


class ChatlogProcessRecorder(
    ChatlogTrackingRecorder, ChatlogApplicationRecorder, ProcessRecorder
):
    """An application recorder whose inserts may carry a tracking record (one atomic step)."""


class ChatlogFactory(InfrastructureFactory[ChatlogTrackingRecorder]):
    """Builds chatlog recorders from the environment.

    ``CHATLOG_REDIS_URL`` (or ``CHATLOG_DATA_DIR``), ``CHATLOG_KEY_PREFIX``,
    ``CHATLOG_PROJECT`` (default: the application's name) and
    ``ORIGINATOR_ID_TYPE`` (``uuid``, the default, or ``text``); each may be
    prefixed with the application's name, as the library does.
    """

    CHATLOG_REDIS_URL = "CHATLOG_REDIS_URL"
    CHATLOG_DATA_DIR = "CHATLOG_DATA_DIR"
    CHATLOG_KEY_PREFIX = "CHATLOG_KEY_PREFIX"
    CHATLOG_PROJECT = "CHATLOG_PROJECT"
    ORIGINATOR_ID_TYPE = "ORIGINATOR_ID_TYPE"

    aggregate_recorder_class = ChatlogAggregateRecorder
    application_recorder_class = ChatlogApplicationRecorder
    tracking_recorder_class = ChatlogTrackingRecorder
    process_recorder_class = ChatlogProcessRecorder

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        target = self.env.get(self.CHATLOG_REDIS_URL) or self.env.get(
            self.CHATLOG_DATA_DIR) or "data"
        self.datastore = Datastore(
            target,
            project=self.env.get(self.CHATLOG_PROJECT) or self.env.name or None,
            key_prefix=self.env.get(self.CHATLOG_KEY_PREFIX) or None,
            originator_id_type=(self.env.get(self.ORIGINATOR_ID_TYPE) or "uuid").lower(),
        )

    def _name(self, suffix: str = "") -> str:
        return (self.env.name or "application") + suffix

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        return self.aggregate_recorder_class(self.datastore, self._name(f".{purpose}"))

    def application_recorder(self) -> ApplicationRecorder:
        topic = self.env.get(self.APPLICATION_RECORDER_TOPIC)
        cls = resolve_topic(topic) if topic else self.application_recorder_class
        recorder: ApplicationRecorder = cls(self.datastore, self._name())
        return recorder

    def tracking_recorder(
        self, tracking_recorder_class: type[ChatlogTrackingRecorder] | None = None
    ) -> ChatlogTrackingRecorder:
        if tracking_recorder_class is None:
            topic = self.env.get(self.TRACKING_RECORDER_TOPIC)
            tracking_recorder_class = (
                resolve_topic(topic) if topic else self.tracking_recorder_class
            )
        assert tracking_recorder_class is not None
        return tracking_recorder_class(self.datastore, self._name(".tracking"))

    def process_recorder(self) -> ProcessRecorder:
        topic = self.env.get(self.PROCESS_RECORDER_TOPIC)
        cls = resolve_topic(topic) if topic else self.process_recorder_class
        recorder: ProcessRecorder = cls(self.datastore, self._name())
        return recorder

    def close(self) -> None:
        self.datastore.close()
        super().close()


Factory = ChatlogFactory

__all__ = [
    "ChatlogAggregateRecorder",
    "ChatlogApplicationRecorder",
    "ChatlogFactory",
    "ChatlogProcessRecorder",
    "ChatlogSubscription",
    "ChatlogTrackingRecorder",
    "Datastore",
    "Factory",
]
