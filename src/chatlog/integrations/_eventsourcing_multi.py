"""A batch of stored events as one MULTI/EXEC: the eventsourcing recorders' bulk write path.

The insert script (:data:`._eventsourcing_scripts._INSERT`) does a batch in one
step, but each command a Lua script calls costs the server several times what
the same command costs in a transaction (a batch of 100 events is 200 XADDs:
~2 ms of server CPU in the script, ~0.4 ms in MULTI/EXEC). So a large batch,
on one server under ``ack=local``, is written in two round trips instead:

1. ``WATCH`` every key the write depends on, then a read-only script
   (:data:`._eventsourcing_scripts._CHECK`) returns the server's time, the
   log's last generated id, the application sequence, the aggregates' versions,
   the tracking position and the versions already recorded in the batch's range;
2. the client checks conflicts and tracking as the insert script does (the same
   ``IntegrityError``), chooses the entries' positions exactly as ``XADD *``
   would (the server's millisecond, after the last generated id) and sends the
   writes, the same commands the script would call, as one ``MULTI``/``EXEC``.

If any watched key changed in between, ``EXEC`` does nothing and the caller
runs the insert script instead: the result is the one the script gives, never
a partial batch, and a busy log costs one wasted round trip.

A recorder's next batch usually finds what its last one left (the log's last
id, the sequence, the versions it wrote: :class:`Memo`), so it goes in one round
trip: ``WATCH``, a guard script given that guess (:data:`._eventsourcing_scripts._GUARD`),
then the writes the guess implies in ``MULTI``/``EXEC``. When anything differs
(another writer came in between), the guard writes a key the client watches, so
the ``EXEC`` does nothing, and the batch takes the checked path above.

The guard runs by ``EVAL`` (a script missing from the server's cache would not
run, and the ``EXEC`` would go unguarded). What remains unguarded: a server that
refuses ``EVAL`` itself but accepts the writes (an ACL that allows ``EVALSHA``
but not ``EVAL``); such a setup must not use these recorders' bulk path.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from typing import Any

import hiredis
from redis.exceptions import NoScriptError, RedisError

from chatlog.eventstore.codec import BLOB_MARK

#: Batches from this size on take the MULTI/EXEC path (smaller ones: one script call,
#: one round trip, which is cheaper for them).
MULTI_MIN = 10

#: (event id, originator id, its digest, originator version, topic, JSON head, JSON
#: tail, state): one stored event, the JSON of its body split where the
#: notification id goes (tail empty when there is none).
Row = tuple[str, str, str, int, str, bytes, bytes, bytes]

#: (upstream, notification id, event id, type, aggregate, body, aggregate index key)
Tracked = tuple[str, int, str, str, str, bytes, str]


@dataclass(frozen=True, slots=True)
class Target:
    """Where one recorder writes: its keys and the entries' constant fields."""

    log: str
    versions: str
    sequence: str
    notifications: str
    tracking: str
    project_index: str
    base: str  # originator keys are f"{base}:o:{digest}"
    record_type: str
    aggregate_prefix: str
    index_prefix: str


@dataclass(slots=True)
class _Group:
    aggregate: str
    key: str
    versions: dict[int, int] = field(default_factory=dict)
    version: int = 0


def _groups(target: Target, rows: list[Row]) -> dict[str, _Group] | int:
    """The batch by originator, or the index of the first event whose version repeats."""
    groups: dict[str, _Group] = {}
    for i, (_, oid, d, version, *_rest) in enumerate(rows):
        g = groups.get(d)
        if g is None:
            g = groups[d] = _Group(target.aggregate_prefix + oid, f"{target.base}:o:{d}")
        if version in g.versions:
            return i
        g.versions[version] = i
    return groups


def _check(conn: Any, script: Any, watched: list[str], keys: list[str],
           args: list[Any]) -> Any:
    conn.send_packed_command(conn.pack_commands(
        [("WATCH", *watched), ("EVALSHA", script.sha, len(keys), *keys, *args)]))
    conn.read_response()
    try:
        return conn.read_response()
    except NoScriptError:
        conn.send_command("SCRIPT", "LOAD", script.script)
        conn.read_response()
        conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
        return conn.read_response()


def _positions(reply: Any, count: int) -> list[bytes] | None:
    """``count`` positions as ``XADD *`` would give them one after another."""
    now = int(reply[0]) * 1000 + int(reply[1]) // 1000
    last_ms, _, last_seq = bytes(reply[2]).partition(b"-")
    if now > int(last_ms):
        ms, seq = now, 0
    else:
        ms, seq = int(last_ms), int(last_seq) + 1
    if seq + count >= 2**64:
        return None
    return [b"%d-%d" % (ms, seq + k) for k in range(count)]


@dataclass(slots=True)
class Memo:
    """What a recorder's last batch left, the guess at what the next one's check would
    read: the log's last id, the sequence, the versions of the aggregates it wrote."""

    last: bytes | None = None
    sequence: int = 0
    versions: dict[str, int] = field(default_factory=dict)
    #: the server's clock minus this process's, in ms, as the last check saw them
    offset: int = 0

    def wrote(self, order: list[_Group], tracked: Tracked | None, tracked_version: int,
              positions: list[bytes], sequence: int) -> None:
        if len(self.versions) > 4096:
            self.versions.clear()
        for g in order:
            self.versions[g.aggregate] = g.version
        if tracked is not None:
            self.versions[tracked[4]] = tracked_version + 1
        self.last, self.sequence = positions[-1], sequence


def insert(pool: Any, script: Any, guard: str, target: Target, rows: list[Row],
           tracked: Tracked | None, application: bool,
           memo: Memo) -> tuple[str, Any] | None:
    """Write the batch as one MULTI/EXEC: ``('ok', notification ids)``,
    ``('conflict', index)``, ``('tracking', recorded)``, or None when a watched key
    changed (nothing was written: run the insert script instead).

    When ``memo`` holds what this recorder's last batch left, the batch goes at once,
    guarded (one round trip; :func:`_guessed`); otherwise, or when the guess was
    wrong, after the check (two)."""
    groups = _groups(target, rows)
    if isinstance(groups, int):
        return "conflict", groups
    order = list(groups.values())
    conn = pool.get_connection()
    try:
        if memo.last is not None:
            nids = _guessed(conn, guard, target, rows, tracked, application, order, groups,
                            memo)
            if nids is not None:
                return "ok", nids
            fresh = _groups(target, rows)  # (the guess filled these in)
            assert not isinstance(fresh, int)
            groups, order = fresh, list(fresh.values())
        return _checked(conn, script, target, rows, tracked, application, order, groups,
                        memo)
    except BaseException:
        conn.disconnect()  # its WATCH state and replies are unknown
        raise
    finally:
        pool.release(conn)


def _checked(conn: Any, script: Any, target: Target, rows: list[Row], tracked: Tracked | None,
             application: bool, order: list[_Group], groups: dict[str, _Group],
             memo: Memo) -> tuple[str, Any] | None:
    keys = [target.log, target.versions, target.sequence, target.tracking,
            *(g.key for g in order)]
    args: list[Any] = [tracked[0] if tracked else "", tracked[4] if tracked else ""]
    for g in order:
        args += [g.aggregate, min(g.versions), max(g.versions)]
    reply = _check(conn, script, [*keys, target.project_index, target.notifications],
                   keys, args)
    outcome = _refused(reply, order, tracked)
    positions = None if outcome else _positions(reply, len(rows) + (1 if tracked else 0))
    if outcome or positions is None:
        conn.send_command("UNWATCH")
        conn.read_response()
        return outcome
    nid0, tracked_version = int(reply[3]), int(reply[5])
    memo.offset = int(reply[0]) * 1000 + int(reply[1]) // 1000 - int(time.time() * 1000)
    packed, count, nids = _writes(target, rows, tracked, application, order, groups, nid0,
                                  tracked_version, positions)
    conn.send_packed_command([b"".join(packed)])
    if not _done(_replies(conn, count)[-1]):
        return None
    memo.wrote(order, tracked, tracked_version, positions, nid0 + len(nids))
    return "ok", nids


def _replies(conn: Any, n: int) -> list[Any]:
    """The next ``n`` replies on ``conn`` (a transaction's: OK, QUEUED..., EXEC's);
    a raw connection (``_wire``) reads them in one loop, then raises the first error
    reply, as redis-py's reads one by one would."""
    many = getattr(conn, "read_responses", None)
    if many is None:
        return [conn.read_response() for _ in range(n)]
    replies: list[Any] = many(n)
    for reply in replies:
        if isinstance(reply, RedisError):
            raise reply
    return replies


def _done(replies: Any) -> bool:
    if replies is None:  # a watched key changed: nothing was written
        return False
    for result in replies:
        if isinstance(result, Exception):
            raise result
    return True


def _guessed(conn: Any, guard: str, target: Target, rows: list[Row], tracked: Tracked | None,
             application: bool, order: list[_Group], groups: dict[str, _Group],
             memo: Memo) -> list[int] | None:
    """The batch in one round trip: WATCH, the guard script (:data:`_GUARD`) given
    the guess, MULTI with the writes the guess implies, EXEC. A wrong guess makes the
    guard write a watched key, so the EXEC does nothing (None)."""
    assert memo.last is not None
    last_ms, _, last_seq = memo.last.partition(b"-")
    ms = int(time.time() * 1000) + memo.offset
    seq = 0
    if ms <= int(last_ms):
        ms, seq = int(last_ms), int(last_seq) + 1
    count = len(rows) + (1 if tracked else 0)
    if seq + count >= 2**64:
        return None
    positions = [b"%d-%d" % (ms, seq + k) for k in range(count)]
    for g in order:
        g.version = memo.versions.get(g.aggregate, 0)
    tracked_version = memo.versions.get(tracked[4], 0) if tracked else 0
    guess: list[Any] = [memo.last, memo.sequence, ms]
    guess += [tracked[0], tracked[1], tracked[4], tracked_version] if tracked else ["", 0, "",
                                                                                     0]
    for g in order:
        guess += [g.aggregate, g.version, min(g.versions), max(g.versions)]
    packed, n, nids = _writes(target, rows, tracked, application, order, groups,
                              memo.sequence, tracked_version, positions)
    guard_key = f"{target.base}:guard"
    keys = [target.log, target.versions, target.sequence, target.tracking, guard_key,
            *(g.key for g in order)]
    pack: Any = hiredis.pack_command
    head = pack(("WATCH", *keys, target.project_index, target.notifications))
    # EVAL, not EVALSHA: a script missing from the server's cache would not run, and
    # the EXEC would go unguarded
    head += pack(("EVAL", guard, len(keys), *keys, *guess))
    conn.send_packed_command([head + b"".join(packed)])
    conn.read_response()
    try:
        conn.read_response()  # 1, or 0: refused
    finally:
        done = _done(_replies(conn, n)[-1])
    if not done:
        return None
    memo.wrote(order, tracked, tracked_version, positions, memo.sequence + len(nids))
    return nids


def _refused(reply: Any, order: list[_Group], tracked: Tracked | None) -> tuple[str, Any] | None:
    if tracked is not None and reply[4] != b"" and int(reply[4]) >= tracked[1]:
        return "tracking", int(reply[4])
    for g, version, hits in zip(order, reply[6], reply[7], strict=True):
        g.version = int(version)
        for score in hits:
            i = g.versions.get(int(score))
            if i is not None:
                return "conflict", i
    return None


#: One event's two XADDs (log, then project index), packed: the XADD's head, the
#: position (a bulk string, twice), the event id, type and aggregate, version; the
#: body framed as codec.frame_body frames it: mark, JSON length, JSON (head,
#: notification id, tail), blob.
_EVENT = (b"%s%s$1\r\ni\r\n$%d\r\n%s\r\n%s$1\r\nv\r\n$%d\r\n%s\r\n"
          b"$1\r\nb\r\n$%d\r\n" + BLOB_MARK + b"%s%s%s%s%s\r\n%s%s$1\r\ne\r\n$0\r\n\r\n")
_BE32 = struct.Struct(">I")


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _descending(versions: dict[int, int], positions: list[bytes]) -> list[bytes]:
    """ZADD's arguments (score, member) for an originator's events, highest version
    first: a small sorted set (a listpack) scans from its head for where each new
    member goes, so members added in descending order are each found a place at
    once; ascending (the batch's order), each scans past all added before it."""
    out: list[bytes] = []
    for version, i in sorted(versions.items(), reverse=True):
        out += (b"%d" % version, positions[i])
    return out


def _writes(target: Target, rows: list[Row], tracked: Tracked | None, application: bool,
            order: list[_Group], groups: dict[str, _Group], nid0: int, tracked_version: int,
            positions: list[bytes]) -> tuple[list[bytes], int, list[int]]:
    """The transaction, packed: the commands the insert script calls, in its order;
    how many commands; the notification ids.

    Each event's two XADDs are packed from a template (a quarter of what
    hiredis.pack_command costs for them, ~200 per batch of 100)."""
    pack: Any = hiredis.pack_command  # (its stub takes one-element tuples only)
    versions = target.versions.encode()
    out = [pack((b"MULTI",))]
    out += [pack((b"HINCRBY", versions, g.aggregate, len(g.versions))) for g in order]
    if application and rows:
        out.append(pack((b"INCRBY", target.sequence, len(rows))))
    nids = list(range(nid0 + 1, nid0 + 1 + len(rows))) if application else []
    notes: list[bytes] = []
    log, pidx = target.log.encode(), target.project_index.encode()
    xadd = b"*13\r\n$4\r\nXADD\r\n" + _bulk(log)
    index = b"*5\r\n$4\r\nXADD\r\n" + _bulk(pidx)
    typed = {d: b"$1\r\nt\r\n" + _bulk(target.record_type.encode()) + b"$1\r\na\r\n"
             + _bulk(g.aggregate.encode()) for d, g in groups.items()}
    topics: dict[str, bytes] = {}
    oids = {d: g.aggregate[len(target.aggregate_prefix):].encode() for d, g in groups.items()}
    be32 = _BE32.pack
    last_d, g, kind, oid = "", order[0] if order else None, b"", b""
    number = b""
    for i, (eid, _, d, version, topic, head, tail, state) in enumerate(rows):
        if d != last_d:  # (a batch is mostly runs of one originator's events)
            last_d, g, kind, oid = d, groups[d], typed[d], oids[d]
        assert g is not None
        g.version += 1
        pos = positions[i]
        if application:
            number = b"%d" % (nid0 + i + 1)
            framed = topics.get(topic)
            if framed is None:
                framed = topics[topic] = b"\0" + topic.encode() + b"\0"
            notes.append(b"%s%s%d\0%s" % (pos, framed, version, oid))
        size = len(head) + len(number) + len(tail)
        bulk = b"$%d\r\n%s\r\n" % (len(pos), pos)
        e, v = eid.encode(), b"%d" % g.version
        out.append(_EVENT % (xadd, bulk, len(e), e, kind, len(v), v,
                             5 + size + len(state), be32(size), head, number, tail, state,
                             index, bulk))
    for g in order:
        out.append(pack((b"RPUSH", target.index_prefix + g.aggregate,
                         *[positions[i] for i in g.versions.values()])))
        out.append(pack((b"ZADD", g.key, *_descending(g.versions, positions))))
    if notes:
        out.append(pack((b"RPUSH", target.notifications, *notes)))
    if tracked is not None:
        upstream, nid, eid, type_, aggregate, body, index_key = tracked
        last = positions[-1]
        out += [
            pack((b"HSET", target.tracking, upstream, nid)),
            pack((b"HINCRBY", versions, aggregate, 1)),
            pack((b"XADD", log, last, b"i", eid, b"t", type_, b"a", aggregate,
                  b"v", tracked_version + 1, b"b", body)),
            pack((b"RPUSH", index_key, last)),
            pack((b"XADD", pidx, last, b"e", b"")),
        ]
    out.append(pack((b"EXEC",)))
    return out, len(out) + len(rows), nids  # each event's element is two commands
