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
