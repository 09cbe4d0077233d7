"""Replay (``GET /v1/events``) and Server-Sent Events (``GET /v1/events/stream``).

Both read the log after a cursor, filtered by project, thread, workflow and
types, and never show a project the caller's token may not read: without a
``project`` filter a scoped token sees its own projects only.

The stream catches up from the log, then subscribes to the shared fan-out and
reads once more, skipping what it already sent: nothing is missed, nothing is
sent twice. Each event's ``id:`` is the cursor after it, so an ``EventSource``
that reconnects (``Last-Event-ID``) resumes exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import functools
import uuid
from dataclasses import dataclass

import orjson
from aiohttp import web

from chatlog.big_events import decode_unparsed
from chatlog.errors import ChatlogError, InvalidInput, InvalidPosition
from chatlog.events import RecordedEvent
from chatlog.eventstore import START, Cursor, EventStore, parse_position, position_after
from chatlog.eventstore.backward import read_raw_before
from chatlog.eventstore.codec import MAX_ID as _MAX_ID
from chatlog.eventstore.project_index import read_projects_before
from chatlog.filters import require_known_types
from chatlog.http._big_json import json_answer
from chatlog.http._routing import Endpoint, read_query
from chatlog.http._scan import SCAN_BUDGET, Scan, Scanned, own_projects, scan
from chatlog.http._sse import out_json
from chatlog.http._state import AppState, state
from chatlog.http.auth import Principal
from chatlog.http.fanout import Subscriber
from chatlog.http.models import EventOut, EventsPage, EventsQuery, StreamQuery
from chatlog.identity import normalize_project_id


@dataclass(frozen=True)
class EventFilter:
    """Which events a reader gets."""

    #: None = every project (admin / open access).
    projects: frozenset[uuid.UUID] | None
    thread_id: str | None = None
    workflow_id: str | None = None
    types: frozenset[str] | None = None

    def partitions(self, store: EventStore) -> list[int] | None:
        if self.projects is None:
            return None
        return sorted({store.partition_of(p) for p in self.projects})

    def matches(self, ev: RecordedEvent) -> bool:
        if self.projects is not None and ev.project not in self.projects:
            return False
        if self.thread_id is not None and (
            ev.aggregate_type != "thread" or ev.aggregate_id != self.thread_id
        ):
            return False
        if self.workflow_id is not None and (
            ev.aggregate_type != "workflow" or ev.aggregate_id != self.workflow_id
        ):
            return False
        return self.types is None or ev.type in self.types

    @functools.cached_property
    def _raw_projects(self) -> frozenset[bytes] | None:
        if self.projects is None:
            return None
        return frozenset(str(p).encode() for p in self.projects)

    @functools.cached_property
    def _raw_types(self) -> frozenset[bytes] | None:
        return None if self.types is None else frozenset(t.encode() for t in self.types)

    def matches_raw(self, fields: dict[bytes, bytes]) -> bool:
        """:meth:`matches` on an undecoded stream entry (decoding only what matches)."""
        project, aggregate_type, aggregate_id = fields[b"a"].split(b"/", 2)
        if self._raw_projects is not None and project not in self._raw_projects:
            return False
        if self.thread_id is not None and (
            aggregate_type != b"thread" or aggregate_id != self.thread_id.encode()
        ):
            return False
        if self.workflow_id is not None and (
            aggregate_type != b"workflow" or aggregate_id != self.workflow_id.encode()
        ):
            return False
        return self._raw_types is None or fields[b"t"] in self._raw_types


def build_filter(
    st: AppState, principal: Principal, q: EventsQuery | StreamQuery
) -> EventFilter:
    """The filter of a query, confined to what ``principal`` may read (403 otherwise)."""
    projects: frozenset[uuid.UUID] | None
    if q.project is not None:
        key = normalize_project_id(q.project, st.settings.project_namespace)
        principal.require_read(key)
        projects = frozenset({key.key})
    else:
        projects = principal.readable
    types = frozenset(t.strip() for t in q.types.split(",") if t.strip()) if q.types else None
    if types:
        require_known_types(types)
    return EventFilter(
        projects=projects,
        thread_id=q.thread_id.strip() if q.thread_id else None,
        workflow_id=q.workflow_id.strip() if q.workflow_id else None,
        types=types or None,
    )


#: A position after any a log holds (the largest one a cursor may name).
_END = f"{_MAX_ID}-{_MAX_ID - 1}"


def parse_cursor(text: str | None, partitions: int) -> Cursor:
    """A cursor from a client (``after`` or ``Last-Event-ID``), within what a log can hold."""
    cursor = Cursor.parse(text, partitions)
    for position in cursor.positions:
        ms, seq = parse_position(position)
        if ms > _MAX_ID or seq > _MAX_ID or (ms, seq) == (_MAX_ID, _MAX_ID):
            raise InvalidPosition(
                f"position {position} is beyond any position a log can hold "
                f"(each part is at most {_MAX_ID})"
            )
    return cursor


def event_out(ev: RecordedEvent, cursor: Cursor) -> EventOut:
    # Not validated again: a big event's data is its stored JSON (a Fragment).
    return EventOut.model_construct(**dict(ev), cursor=str(cursor))


def _successor(position: str) -> str:
    ms, seq = parse_position(position)
    return f"{ms}-{seq + 1}" if seq < _MAX_ID else f"{ms + 1}-0"


def _predecessor(position: str) -> str:
    ms, seq = parse_position(position)
    if seq > 0:
        return f"{ms}-{seq - 1}"
    return f"{ms - 1}-{_MAX_ID}" if ms > 0 else START


async def scan_back(
    st: AppState, before: Cursor, flt: EventFilter, limit: int, budget: int = SCAN_BUDGET
) -> tuple[list[tuple[RecordedEvent, Cursor]], Cursor, bool]:
    """Matching events before ``before`` (exclusive, per partition), newest first.

    The partitions are merged by position (newest first); each event comes with
    the cursor that continues backwards after it. Returns the events, that
    cursor, and whether older events may follow. Looks at most at ``budget``
    events; a partition ends at the oldest event it keeps (no 410). A reader
    confined to some projects has no budget, and its cursor moves only past
    events it receives (as in :class:`Scan`): nothing it gets depends on what
    other projects wrote.
    """
    scoped = flt.projects is not None
    store = st.store
    parts = flt.partitions(store)
    wanted = parts if parts is not None else list(range(store.partitions))
    positions = list(before.positions)
    read_to = list(before.positions)  # where each partition's reads stand
    buffers: dict[int, list[tuple[bytes, dict[bytes, bytes]]]] = {p: [] for p in wanted}
    ended: set[int] = set()
    fetched = 0
    found: list[tuple[RecordedEvent, Cursor]] = []
    ask = min(1000, max(limit, 100))
    mine = await own_projects(st, flt, wanted)
    while True:
        for p in wanted:
            if buffers[p] or p in ended:
                continue
            n = ask if scoped else min(ask, budget - fetched)
            if n <= 0:
                return found, Cursor(positions), True
            async with st.reads:
                entries = await (
                    read_projects_before(store, p, mine[p], read_to[p], n)
                    if mine is not None else read_raw_before(store, p, read_to[p], n))
            fetched += len(entries)
            if len(entries) < n:
                ended.add(p)
            entries.reverse()  # oldest first, so the newest pops off the end cheaply
            buffers[p] = entries
        ready = [p for p in wanted if buffers[p]]
        if not ready:
            return found, Cursor(positions), False
        p = max(ready, key=lambda q: parse_position(buffers[q][-1][0].decode()))
        pos, fields = buffers[p].pop()
        read_to[p] = pos.decode()
        if not scoped:
            positions[p] = read_to[p]
        if flt.matches_raw(fields):
            positions[p] = read_to[p]
            found.append((await decode_unparsed(p, pos, fields), Cursor(list(positions))))
            if len(found) >= limit:
                more = scoped or any(buffers[q] or q not in ended for q in wanted)
                return found, Cursor(positions), more


async def _own_heads(
    st: AppState, before: Cursor, flt: EventFilter, found: list[tuple[RecordedEvent, Cursor]]
) -> Cursor:
    """For a reader confined to some projects: per partition, its own newest event before
    ``before`` (the start when it has none). The log's heads would tell it when the
    other projects last wrote; its own newest events tell it nothing, and nothing
    of its own lies between them and the heads."""
    assert flt.projects is not None
    newer = Cursor([START] * st.store.partitions)
    for ev, _ in found:
        if position_after(ev.position, newer.positions[ev.partition]):
            newer = newer.advanced(ev.partition, ev.position)
    for p in flt.partitions(st.store) or []:
        if newer.positions[p] != START:
            continue
        mine = frozenset(k for k in flt.projects if st.store.partition_of(k) == p)
        only_p = EventFilter(projects=mine, thread_id=flt.thread_id,
                             workflow_id=flt.workflow_id, types=flt.types)
        last, _, _ = await scan_back(st, before, only_p, 1)
        if last:
            newer = newer.advanced(p, last[0][0].position)
    return newer


async def list_events_before(
    st: AppState, q: EventsQuery, flt: EventFilter
) -> EventsPage:
    """A page read backwards (``before``): newest first, with the cursor of what is newer."""
    assert q.before is not None
    newer: Cursor | None = None
    if q.before == "end" and flt.projects is not None:
        # Not the heads: they would tell a reader confined to some projects when the
        # others last wrote. It reads from the end of any log; its newer cursor is its
        # own newest events (see _own_heads).
        before = Cursor([_END] * st.store.partitions)
    elif q.before == "end":
        # The heads first: the page holds nothing newer than them, so a reader that
        # follows ``newer_cursor`` gets every later event exactly once.
        heads = await st.store.heads()
        before = Cursor([_successor(h) for h in heads.positions])
        newer = heads
    else:
        before = parse_cursor(q.before, st.store.partitions)
        newer = Cursor([_predecessor(b) for b in before.positions])
    found, cursor, more = await scan_back(st, before, flt, q.limit)
    if newer is None:
        newer = await _own_heads(st, before, flt, found)
    return EventsPage(
        events=[event_out(ev, cur) for ev, cur in found], cursor=str(cursor),
        has_more=more, newer_cursor=str(newer),
    )


async def list_events(request: web.Request) -> web.StreamResponse:
    """Events after ``after`` (a cursor), oldest first, filtered; ``cursor`` continues.

    A page holds at most ``limit`` events and at most CHATLOG_REPLAY_PAGE_BYTES of
    event bodies (always at least one event); ``has_more`` says whether to go on.
    It is written as it is read, one read of the log at a time, not built whole.
    With ``before`` instead: events before it, newest first (``before=end``: the newest).
    """
    st = state(request)
    principal = st.tokens.authenticate(request)
    q = read_query(request, EventsQuery)
    flt = build_filter(st, principal, q)
    if q.before is not None:
        if q.after is not None:
            raise InvalidInput("pass either after (read forwards) or before (backwards), not both")
        return json_answer(await list_events_before(st, q, flt))
    pass_ = Scan(st, parse_cursor(q.after, st.store.partitions), flt, q.limit,
                 st.settings.replay_page_bytes)
    async with contextlib.aclosing(pass_.batches()) as batches:
        # The first read happens before the answer starts, so a trimmed position (410)
        # or a missing Redis (503) is still a proper problem document.
        batch = await anext(batches, None)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"events":[')
        sep = b""
        while batch is not None:
            if batch:
                await response.write(sep + b",".join(out_json(ev, cur) for ev, cur in batch))
                sep = b","
            batch = await anext(batches, None)
    tail = {"cursor": str(pass_.cursor), "has_more": pass_.more}
    await response.write(b"]," + orjson.dumps(tail)[1:])
    await response.write_eof()
    return response


class SseStream:
    """One open SSE answer: its writer, and the switch that ends it on shutdown."""

    def __init__(self, request: web.Request, response: web.StreamResponse) -> None:
        self.request = request
        self.response = response
        self.sub: Subscriber | None = None
        self.stopping = False
        self.cursor: Cursor | None = None
        #: True while a write waits for the socket to drain.
        self.writing = False

    def stop(self) -> None:
        """Ask the stream to end (the server is shutting down)."""
        self.stopping = True
        if self.sub is not None:
            self.sub.wakeup.set()
        self.cut_off_if_stuck()

    def cut_off_if_stuck(self) -> None:
        """Drop the connection if a write is stuck (a client that stopped reading)."""
        if self.writing and self.request.transport is not None:
            self.request.transport.abort()

    def subscribed(self, sub: Subscriber) -> None:
        self.sub = sub
        sub.on_overflow = self.cut_off_if_stuck

    async def write(self, chunk: bytes) -> None:
        self.writing = True
        try:
            await self.response.write(chunk)
        finally:
            self.writing = False


async def stream_events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: catch up after ``Last-Event-ID`` (or ``after``), then live."""
    st = state(request)
    principal = st.tokens.authenticate(request, allow_query=True)
    q = read_query(request, StreamQuery)
    flt = build_filter(st, principal, q)
    last_id = request.headers.get("Last-Event-ID") or q.after
    cursor = parse_cursor(last_id, st.store.partitions)
    # The first read happens before the answer starts, so a deleted position
    # (410) or a missing Redis (503) is still a proper problem document.
    first = await scan(st, cursor, flt, 500)

    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    stream = SseStream(request, response)
    st.streams.add(stream)
    try:
        await stream.write(b"retry: 1000\n\n")
        await _catch_up(st, stream, flt, first)
        if not stream.stopping:
            assert stream.cursor is not None
            await _live(st, stream, flt, stream.cursor)
    except ConnectionResetError:
        pass  # the client went away (or was cut off); it resumes from its last id
    except ChatlogError as exc:  # e.g. Redis went away mid-catch-up: end; it resumes
        with contextlib.suppress(ConnectionResetError):
            await stream.write(f": {exc.title}; reconnect with Last-Event-ID\n\n".encode())
    finally:
        if stream.sub is not None:
            st.fanout.unsubscribe(stream.sub)
        st.streams.discard(stream)
    with contextlib.suppress(ConnectionResetError, RuntimeError):
        await response.write_eof()
    return response


async def _catch_up(st: AppState, stream: SseStream, flt: EventFilter, page: Scanned) -> None:
    """Send what the log has; then subscribe and send what arrived meanwhile."""
    subscribed = False
    while not stream.stopping:
        if page.found:
            await stream.write(b"".join(st.sse.encode(ev, cur) for ev, cur in page.found))
        if not page.more:
            if subscribed:
                break
            stream.subscribed(await st.fanout.subscribe())
            subscribed = True
        page = await scan(st, page.cursor, flt, 500)
    stream.cursor = page.cursor


async def _live(st: AppState, stream: SseStream, flt: EventFilter, cursor: Cursor) -> None:
    """Send each event the fan-out delivers; keep-alive comments when idle."""
    sub = stream.sub
    assert sub is not None
    while not stream.stopping:
        await sub.wakeup.wait()
        if stream.stopping:
            break
        if sub.overflowed:
            await stream.write(b": cut off from the live tail (too far behind, or it "
                               b"stopped); reconnect with Last-Event-ID\n\n")
            break
        chunks = []
        for ev in sub.drain():
            if not position_after(ev.position, cursor.positions[ev.partition]):
                continue  # already sent by the catch-up read
            if flt.matches(ev):
                # Only past events it receives: an id must not tell a reader
                # confined to some projects when the others wrote.
                cursor = cursor.advanced(ev.partition, ev.position)
                chunks.append(st.sse.encode(ev, cursor))
            elif flt.projects is None:
                cursor = cursor.advanced(ev.partition, ev.position)
        if sub.keepalive:
            sub.keepalive = False
            if not chunks:
                chunks.append(b": keep-alive\n\n")
        if chunks:
            await stream.write(b"".join(chunks))


ENDPOINTS = [
    Endpoint(
        "GET", "/v1/events", list_events, "Replay events after a position (or before one)",
        "events",
        query=EventsQuery,
        responses={200: (EventsPage, "A page of events; `cursor` continues after it")},
        errors=(410,),
        description=(
            "Without `project`, a token scoped to projects sees only its own. With "
            "`before=CURSOR` (or `before=end`) the page is read backwards, newest first, "
            "with the same filters: `cursor` continues to older events (pass it as "
            "`before`), `newer_cursor` reads what is newer (pass it as `after`). Reading "
            "backwards ends at the oldest event kept, never 410."
        ),
    ),
    Endpoint(
        "GET", "/v1/events/stream", stream_events, "Events as Server-Sent Events", "events",
        query=StreamQuery,
        responses={200: (None, "text/event-stream; each event's `id:` is the cursor after it")},
        errors=(410,),
        media_type="text/event-stream",
        headers=(("Last-Event-ID", "The `id:` of the last event received: the stream resumes "
                  "right after it (a reconnecting EventSource sends it by itself)"),),
        description=(
            "Catches up after `Last-Event-ID` (or `after`), then streams live events. "
            "Keep-alive comments every CHATLOG_SSE_KEEPALIVE seconds. A subscriber more "
            "than CHATLOG_SSE_BUFFER events behind is cut off and resumes from its last id. "
            "Each frame's `event:` is the event type and `data:` an `Event` (its `data` "
            "schema depends on `type`)."
        ),
    ),
]
