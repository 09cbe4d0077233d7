"""Setting up the read model file: safe when several connections do it at once."""

from __future__ import annotations

import threading
from pathlib import Path

from chatlog.projections import _db
from chatlog.projections.conversations import ConversationsProjection


def test_concurrent_setup_of_a_fresh_file(tmp_path: Path) -> None:
    """Two writers creating one fresh file at once (serve and a CLI, say) both succeed."""
    errors: list[BaseException] = []

    def setup(path: Path) -> None:
        try:
            conn = _db.connect_writer(path)
            try:
                _db.create_all(conn, [ConversationsProjection()])
            finally:
                conn.close()
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    for i in range(60):
        path = tmp_path / f"m{i}.sqlite"
        threads = [threading.Thread(target=setup, args=(path,)) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    conn = _db.connect_reader(tmp_path / "m0.sqlite")
    try:
        assert _db.table_exists(conn, "messages")
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        conn.close()


def test_a_file_created_by_this_code_is_not_created_again(tmp_path: Path) -> None:
    """The schema's fingerprint (the code that declares it) is stamped in the file: an
    open of a stamped file runs no CREATE (so it imports no sqlite-utils); another
    fingerprint (the code changed) runs them all again."""
    from chatlog.projections.registry import default_projections
    from tests.projections._util import indexes

    path = tmp_path / "m.sqlite"
    projections = default_projections()
    conn = _db.connect_writer(path)
    try:
        _db.create_all(conn, projections)
        stamp = conn.execute(
            "SELECT value FROM projector_meta WHERE name = 'schema_fingerprint'").fetchone()
        assert stamp == (_db.schema_fingerprint(projections),)
        conn.execute("DROP INDEX messages_by_thread")
        _db.create_all(conn, projections)  # stamped: nothing is created
        assert "messages_by_thread" not in indexes(path)
        conn.execute("UPDATE projector_meta SET value = 'older code' "
                     "WHERE name = 'schema_fingerprint'")
        _db.create_all(conn, projections)
        assert "messages_by_thread" in indexes(path)
    finally:
        conn.close()
