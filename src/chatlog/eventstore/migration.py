"""Copy a log from one deployment to another (one server → a cluster, P → P' partitions).

Every event keeps its id, aggregate, version and body, and its position's
millisecond part (the event's time): the source partitions are merged in
position order and each event is added to its target partition with its
source position as the stream id (the next free id of that millisecond when
two source partitions share one). Order per aggregate is kept (an aggregate
lives in one partition on both sides).

Rerunning is idempotent and resumes: an event whose version the target
aggregate already has is skipped, by version, not by an expiring id key.
Copy into a target nobody else writes to; switch the writers over after it.
Remembered event ids (the idempotency and outcome windows) are copied; the
target remembers each for its own window (at least the time the source had left).
"""

from __future__ import annotations

import heapq
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from chatlog.errors import EventStoreError
from chatlog.eventstore.codec import START, parse_position
from chatlog.eventstore.connection import guard, text
from chatlog.eventstore.idempotency import library, record, spec
from chatlog.eventstore.keys import partition_of
from chatlog.eventstore.remembered import Remembered, remembered
from chatlog.eventstore.store import EventStore

#: KEYS: stream, versions, aggregate index. ARGV: aggregate, version, source position,
#: the id's record to remember ('': none; see :mod:`.idempotency`), event id, the id
#: records' spec, the remembered content digest, then field, value, ...
#: An event whose version the target has is skipped only if it is the same event.
#: (Appended to the append script's functions: ``ids``, ``remember`` and the rest.)
_COPY_LUA = """
local aggregate, version = ARGV[1], tonumber(ARGV[2])
local current = tonumber(redis.call('HGET', KEYS[2], aggregate) or '0')
if current >= version then
  local pos = redis.call('LINDEX', KEYS[3], version - 1)
  local e = pos and redis.call('XRANGE', KEYS[1], pos, pos)[1]
  if e then
    for i = 1, #e[2], 2 do
      if e[2][i] == 'i' and e[2][i + 1] == ARGV[5] then return {'skip', tostring(current)} end
    end
  end
  return {'other', tostring(current)}
end
if current ~= version - 1 then return {'gap', tostring(current)} end
local id = ARGV[3]
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if last[1] then
  local lms, lseq = string.match(last[1][1], '^(%d+)-(%d+)$')
  local ms = string.match(id, '^(%d+)-')
  if tonumber(ms) <= tonumber(lms) then id = lms .. '-' .. tostring(tonumber(lseq) + 1) end
end
local fields = {}
for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
local pos = redis.call('XADD', KEYS[1], id, unpack(fields))
redis.call('RPUSH', KEYS[3], pos)
redis.call('XADD', string.sub(KEYS[1], 1, -4) .. 'pidx:' .. string.match(aggregate, '^[^/]*'),
  pos, 'e', '')
redis.call('HSET', KEYS[2], aggregate, ARGV[2])
if ARGV[4] ~= '' then
  local st = ids(ARGV[6], KEYS[1])
  remember(st, ARGV[4], project_number(st, string.match(aggregate, '^[^/]*'), true), pos,
    ARGV[2], ARGV[7])
end
return {'ok', pos}
"""


class MigrationError(EventStoreError):
    """The target cannot take the source's events as they are."""

    status = 409
    title = "Migration conflict"


@dataclass
class MigrationProgress:
    total: int = 0
    copied: int = 0
    skipped: int = 0

    @property
    def done(self) -> int:
        return self.copied + self.skipped


class _Source:
    """Pages of one source partition, in position order."""

    def __init__(self, store: EventStore, partition: int, page: int) -> None:
        self.store = store
        self.partition = partition
        self.page = page
        self.after = START
        self.done = False

    async def next_page(self) -> list[tuple[bytes, dict[bytes, bytes]]]:
        if self.done:
            return []
        if self.after == START:  # a trimmed partition is read from its horizon on
            self.after = await self.store.horizon(self.partition) or START
        entries = await self.store.read_raw(self.partition, self.after, self.page)
        if len(entries) < self.page:
            self.done = True
        if entries:
            self.after = text(entries[-1][0])
        return entries


Entry = tuple[int, str, dict[bytes, bytes]]


async def _merged(source: EventStore, page: int) -> AsyncIterator[Entry]:
    """Every source entry as ``(partition, position, fields)``, merged by position."""
    readers = [_Source(source, p, page) for p in range(source.partitions)]
    buffers: list[list[tuple[bytes, dict[bytes, bytes]]]] = []
    heap: list[tuple[tuple[int, int], int, int]] = []
    for r in readers:
        entries = await r.next_page()
        buffers.append(entries)
        if entries:
            heapq.heappush(heap, (parse_position(text(entries[0][0])), r.partition, 0))
    while heap:
        _, p, i = heapq.heappop(heap)
        pos, fields = buffers[p][i]
        yield p, text(pos), fields
        i += 1
        if i == len(buffers[p]):
            buffers[p] = await readers[p].next_page()
            i = 0
        if i < len(buffers[p]):
            heapq.heappush(heap, (parse_position(text(buffers[p][i][0])), p, i))


async def migrate(
    source: EventStore,
    target: EventStore,
    *,
    batch: int = 500,
    on_progress: Callable[[MigrationProgress], Awaitable[None] | None] | None = None,
) -> MigrationProgress:
    """Copy every event of ``source`` into ``target``; return how many were copied/skipped."""
    progress = MigrationProgress()
    status = await source.status()
    progress.total = status.events
    source_code = library() + _COPY_LUA
    script = target.redis.register_script(source_code)
    await guard(target.redis.script_load(source_code))
    target_ids = target._appender  # the store's own package
    ids_spec = spec(target_ids.idempotency_window_ms, target_ids.outcome_window_ms, False)
    chunk: list[Entry] = []

    async def flush() -> None:
        if not chunk:
            return
        known = await _remembered(source, chunk)
        pipe = target.redis.pipeline(transaction=False)
        for (_p, pos, fields), found in zip(chunk, known, strict=True):
            aggregate = text(fields[b"a"])
            project = uuid.UUID(aggregate.split("/", 1)[0])
            tp = partition_of(project, target.partitions)
            keys = [target.keys.log(tp), target.keys.versions(tp),
                    target.keys.aggregate_index(tp, aggregate)]
            rec, digest = b"", b""
            if found is not None and found.ttl_ms != 0:
                rec = record(project, uuid.UUID(text(fields[b"i"])), "", found.kind != "o")
                digest = found.digest
            flat: list[Any] = []
            for k, v in fields.items():
                flat += [k, v]
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, aggregate,
                                 text(fields[b"v"]), pos, rec, fields[b"i"], ids_spec,
                                 digest, *flat)
        replies = await guard(pipe.execute(raise_on_error=False))
        for (p, pos, fields), reply in zip(chunk, replies, strict=True):
            if isinstance(reply, BaseException):
                raise MigrationError(
                    f"copying event {text(fields[b'i'])} (partition {p}, position {pos}) "
                    f"failed: {reply}; nothing after it was copied; rerun to resume"
                ) from reply
            state = text(reply[0])
            if state == "other":
                raise MigrationError(
                    f"aggregate {text(fields[b'a'])} has another event at version "
                    f"{text(fields[b'v'])} in the target than event {text(fields[b'i'])} of the "
                    "source: the target has events of its own; copy into an empty log"
                )
            if state == "gap":
                raise MigrationError(
                    f"aggregate {text(fields[b'a'])} is at version {text(reply[1])} in the target "
                    f"but the source's next event has version {text(fields[b'v'])}: the target "
                    "has other events for it, or the source was trimmed"
                )
            if state == "ok":
                progress.copied += 1
            else:
                progress.skipped += 1
        chunk.clear()
        if on_progress is not None:
            result = on_progress(progress)
            if result is not None:
                await result

    async for item in _merged(source, batch):
        chunk.append(item)
        if len(chunk) >= batch:
            await flush()
    await flush()
    await target.confirm_committed()  # under ack=replicated, readers see the copy once replicated
    return progress


async def _remembered(source: EventStore, chunk: list[Entry]) -> list[Remembered | None]:
    """What the source still remembers of each event's id."""
    by_partition: dict[int, list[int]] = {}
    for i, (p, _pos, _fields) in enumerate(chunk):
        by_partition.setdefault(p, []).append(i)
    out: list[Remembered | None] = [None] * len(chunk)
    for p, members in by_partition.items():
        ids = []
        for i in members:
            fields = chunk[i][2]
            ids.append((uuid.UUID(text(fields[b"a"]).split("/", 1)[0]),
                        uuid.UUID(text(fields[b"i"]))))
        for i, found in zip(members, await remembered(source, p, ids), strict=True):
            out[i] = found
    return out
