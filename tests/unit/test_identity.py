"""Identity rules (seed tasks 1.4, 1.5): properties and the seed's Tests 2 and 3."""

from __future__ import annotations

import string
import unicodedata
import uuid

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from chatlog.errors import InvalidInput, InvalidProjectId
from chatlog.identity import (
    DEFAULT_PROJECT_NAMESPACE,
    SYSTEM_PROJECT,
    canonical_name,
    normalize_project_id,
    normalize_thread_id,
    random_uuid,
)

printable = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cf", "Cs")), min_size=1, max_size=60
)
padding = st.text(alphabet=" \u3000\u00a0\u2002", max_size=3)


@given(printable)
@example(" ")  # the system scope: its shown name must normalise to it again
def test_normalisation_is_idempotent(name: str) -> None:
    first = normalize_project_id(name)
    assert normalize_project_id(first.display).key == first.key
    assert normalize_project_id(str(first.key)).key == first.key


@given(printable, padding, padding)
def test_insensitive_to_case_and_padding(name: str, left: str, right: str) -> None:
    assume(len(left + name + right) <= 256)
    key = normalize_project_id(name).key
    assert normalize_project_id(left + name + right).key == key
    # Case is what casefold folds: "I" and dotless "ı" are different letters.
    assume(name.upper().casefold() == name.lower().casefold() == name.casefold())
    assert normalize_project_id(name.upper()).key == key
    assert normalize_project_id(name.lower()).key == key


@given(printable)
def test_insensitive_to_unicode_compatibility_forms(name: str) -> None:
    for form in ("NFC", "NFD", "NFKC", "NFKD"):
        variant = unicodedata.normalize(form, name)
        assume(len(variant) <= 256)
        assert normalize_project_id(variant).key == normalize_project_id(name).key


@given(printable, printable)
def test_distinct_names_stay_distinct(a: str, b: str) -> None:
    assume(canonical_name(a) != canonical_name(b))
    ka, kb = normalize_project_id(a), normalize_project_id(b)
    assume(not ka.is_system and not kb.is_system)
    assert ka.key != kb.key


@given(st.text(alphabet=string.ascii_letters + string.digits + "-_. ", min_size=1, max_size=40))
def test_ascii_names_ignore_case_entirely(name: str) -> None:
    key = normalize_project_id(name).key
    assert normalize_project_id(name.upper()).key == key
    assert normalize_project_id(name.swapcase()).key == key


def test_seed_test_2_blog_project_in_any_case_is_one_project() -> None:
    keys = {normalize_project_id(n).key
            for n in ("Blog-Project", "blog-project", " BLOG-PROJECT ", "Ｂｌｏｇ-Ｐｒｏｊｅｃｔ")}
    assert len(keys) == 1
    assert keys.pop() == uuid.uuid5(DEFAULT_PROJECT_NAMESPACE, "blog-project")


def test_display_keeps_the_raw_name() -> None:
    assert normalize_project_id("  Blog-Project ").display == "Blog-Project"


@pytest.mark.parametrize("raw", [None, "", "   ", "system-master", " SYSTEM-Master "])
def test_system_scope(raw: str | None) -> None:
    key = normalize_project_id(raw)
    assert key.key == SYSTEM_PROJECT and key.is_system


def test_uuid_passes_through() -> None:
    u = uuid.uuid4()
    assert normalize_project_id(str(u).upper()).key == u
    assert normalize_project_id(u).key == u


def test_namespace_is_a_setting() -> None:
    other = uuid.uuid4()
    assert normalize_project_id("x", other).key == uuid.uuid5(other, "x")


@pytest.mark.parametrize("raw", ["a" * 257, "bad\x00name", "tab\tname", "new\nline", "zw\u200bsp"])
def test_invalid_project_names_are_clear_errors(raw: str) -> None:
    with pytest.raises(InvalidProjectId) as err:
        normalize_project_id(raw)
    assert "project name" in str(err.value)


@pytest.mark.parametrize("raw", [None, "", "  ", "null", "NULL", "None", "none", "undefined",
                                 "Undefined"])
def test_seed_test_3_null_thread_ids_start_a_new_thread(raw: str | None) -> None:
    thread_id, created = normalize_thread_id(raw)
    assert created
    assert thread_id.startswith("thread-")
    uuid.UUID(thread_id.removeprefix("thread-"))


def test_thread_ids_are_unique_and_kept() -> None:
    assert normalize_thread_id(None)[0] != normalize_thread_id(None)[0]
    assert normalize_thread_id(" thread-abc ") == ("thread-abc", False)


def test_bad_thread_ids() -> None:
    with pytest.raises(InvalidInput):
        normalize_thread_id("x" * 201)
    with pytest.raises(InvalidInput):
        normalize_thread_id("a\nb")


def test_random_uuids_are_version_4_and_distinct() -> None:
    ids = [random_uuid() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert all(u.version == 4 and u.variant == uuid.RFC_4122 for u in ids)
    assert all(uuid.UUID(str(u)) == u for u in ids[:100])


def test_a_forked_child_does_not_repeat_the_parents_random_uuids() -> None:
    import os

    random_uuid()  # the parent holds a pool of random bytes now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids, then leave at once
        os.write(write, "".join(str(random_uuid()) for _ in range(3)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 4096).decode()
    os.close(read)
    parent = "".join(str(random_uuid()) for _ in range(3))
    assert len(child) == len(parent) == 108
    assert child != parent


def test_new_thread_ids_are_prefixed_version_4_uuids() -> None:
    from chatlog.identity import THREAD_PREFIX, new_thread_id

    ids = [new_thread_id() for _ in range(5_000)]
    assert len(set(ids)) == len(ids)
    for tid in ids:
        assert tid.startswith(THREAD_PREFIX)
        u = uuid.UUID(tid[len(THREAD_PREFIX):])
        assert str(u) == tid[len(THREAD_PREFIX):]  # canonical: lowercase, dashed
        assert u.version == 4 and u.variant == uuid.RFC_4122
