"""The column-wise records of a sealed segment's ids (``_sealed_ids``) equal what the
append path and the id file define id by id: buckets and filter hashes as
``idempotency.record_of``, filter bits as set one id at a time, id file entries as
``idfiles.ENTRY`` packs them. Pure computation, no server."""

from __future__ import annotations

import random
import uuid

import numpy as np
import pyarrow as pa
import pytest

from chatlog.eventstore._sealed_ids import (
    Identities,
    Remembered,
    file_body,
    filter_bits,
    of_file,
    parse_values,
    uuid_bytes,
)
from chatlog.eventstore.archive import idfiles
from chatlog.eventstore.idempotency import BUCKETS, record_of


def reference_bits(recs: list[bytes], blocks: int) -> bytes:
    """The filter bits of records, one id at a time (the archiver's code before)."""
    piece = bytearray(blocks * 8)
    for rec in recs:
        at = int.from_bytes(rec[27:31]) % blocks * 8
        for p in rec[31:37]:
            p %= 64
            piece[at + p // 8] |= 0x80 >> (p % 8)
    return bytes(piece)


def some_ids(n: int, projects: int = 3, seed: int = 7) -> tuple[list[str], list[str], list[int]]:
    rng = random.Random(seed)
    names = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(projects)]
    return ([names[rng.randrange(projects)] for _ in range(n)],
            [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(n)],
            [1_764_500_000_000 + rng.randrange(10**7) for _ in range(n)])


def test_buckets_and_filter_hashes_are_the_records_ones() -> None:
    projects, event_ids, ms = some_ids(500)
    ids = Identities.of(pa.array(projects), pa.array(event_ids), np.array(ms))
    for i, (p, e) in enumerate(zip(projects, event_ids, strict=True)):
        rec = record_of(uuid.UUID(p).bytes, uuid.UUID(e).bytes, bytes(8))
        assert ids.bucket[i] == int.from_bytes(rec[1:3]) % BUCKETS
        assert ids.hashes[i].tobytes() == rec[27:37]
        assert ids.event_ids[i].tobytes() == rec[11:27]
        assert ids.projects[ids.project_of[i]] == p
    recs = [record_of(uuid.UUID(p).bytes, uuid.UUID(e).bytes, bytes(8))
            for p, e in zip(projects, event_ids, strict=True)]
    for blocks in (1, 7, 8192):
        assert filter_bits(ids.hashes, blocks) == reference_bits(recs, blocks)


def test_ids_not_in_canonical_form_are_read_as_uuid_reads_them() -> None:
    texts = [str(uuid.uuid4()) for _ in range(4)]
    odd = [texts[0].upper(), texts[1].replace("-", ""), "{" + texts[2] + "}", texts[3]]
    assert [bytes(r) for r in uuid_bytes(pa.array(odd))] == [uuid.UUID(t).bytes for t in texts]
    assert [bytes(r) for r in uuid_bytes(pa.array(texts[:2]))] == [
        uuid.UUID(t).bytes for t in texts[:2]]
    with pytest.raises(ValueError):
        uuid_bytes(pa.array(["x" * 36]))


def reference_parse(value: bytes) -> tuple[int, int, int, bytes]:
    pos, version, digest = [*value.split(b" ", 2), b""][:3]
    offset, seq = pos.rsplit(b"-", 1)
    return int(offset), int(seq), int(version), digest if len(digest) == 8 else bytes(8)


@pytest.mark.parametrize("odd", [False, True])
def test_record_values_are_parsed_as_one_by_one(odd: bool) -> None:
    values = [b"123-0 1 abcdefgh", b"599999-12 40 a b-c d\x00", b"7-3 2 ", b"0-0 9 \xff" * 1]
    if odd:  # a negative offset (clock skew), a value without its digest
        values += [b"-5-1 3 12345678", b"8-1 4"]
    offset, seq, version, digest = parse_values(values)
    expected = [reference_parse(v) for v in values]
    assert offset.tolist() == [e[0] for e in expected]
    assert seq.tolist() == [e[1] for e in expected]
    assert version.tolist() == [e[2] for e in expected]
    assert digest == b"".join(e[3] for e in expected)


def test_the_id_file_holds_what_idfiles_packs_and_reads_back_its_identities() -> None:
    projects, event_ids, ms = some_ids(300)
    ids = Identities.of(pa.array(projects), pa.array(event_ids), np.array(ms))
    rng = random.Random(3)
    found = np.array(sorted(rng.sample(range(300), 200)), np.int64)
    windows = np.array([rng.choice((600_000, 86_400_000)) for _ in found], np.int64)
    generations = ids.ms[found] // windows - np.array([rng.choice((0, 1)) for _ in found])
    values = [f"{ms[i] - g * w}-{i % 5} {i + 1} ".encode() + bytes([i % 256]) * 8
              for i, w, g in zip(found.tolist(), windows.tolist(), generations.tolist(),
                                 strict=True)]
    remembered = Remembered(found, windows, generations, [b""] * len(found))
    body = file_body(ids, remembered, values)
    expected = sorted(
        idfiles.ENTRY.pack(uuid.UUID(projects[i]).bytes, uuid.UUID(event_ids[i]).bytes, ms[i],
                           i % 5, i + 1, bytes([i % 256]) * 8, w, g)
        for i, w, g in zip(found.tolist(), windows.tolist(), generations.tolist(), strict=True))
    assert body == b"".join(expected)
    data = idfiles.encode_sorted(body)
    got = idfiles.find(idfiles.check("x", data), uuid.UUID(projects[found[0]]).bytes,
                       uuid.UUID(event_ids[found[0]]).bytes)
    assert got is not None and got.position == f"{ms[found[0]]}-{found[0] % 5}"

    again, window, generation = of_file(memoryview(body))
    order = {(ids.projects[ids.project_of[i]], ids.event_ids[i].tobytes()): i
             for i in found.tolist()}
    for k in range(len(again)):
        i = order[(again.projects[again.project_of[k]], again.event_ids[k].tobytes())]
        assert again.bucket[k] == ids.bucket[i]
        assert again.hashes[k].tobytes() == ids.hashes[i].tobytes()
        j = found.tolist().index(i)
        assert (window[k], generation[k]) == (windows[j], generations[j])


def test_buckets_group_a_records_fields_by_window_generation_and_bucket() -> None:
    projects, event_ids, ms = some_ids(2000, projects=1)
    ids = Identities.of(pa.array(projects), pa.array(event_ids), np.array(ms))
    index = np.arange(2000)
    windows = np.where(index % 3 == 0, 86_400_000, 600_000)
    generations = ids.ms // windows
    fields = [bytes(ids.event_ids[i]) + b"1" for i in range(2000)]
    remembered = Remembered(index, windows, generations, fields)
    expected: dict[str, list[bytes]] = {}
    for i in range(2000):
        key = f"t:ids:{windows[i]}:{generations[i]}:{ids.bucket[i]}"
        expected.setdefault(key, []).append(fields[i])
    got = remembered.bucket_keys(ids, "t:")
    assert len(got) == len(expected)
    assert {k: sorted(v) for k, v in got} == {k: sorted(v) for k, v in expected.items()}
    filters = dict(remembered.filters())
    assert sorted(filters) == sorted({f"{w}:{g}" for w, g in zip(windows.tolist(),
                                                                 generations.tolist(),
                                                                 strict=True)})
    assert sum(len(at) for at in filters.values()) == 2000
