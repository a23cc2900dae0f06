"""The one database opener: WAL, foreign keys, busy timeout, migrations applied exactly once."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from common.sqlite import open_db, write_transaction


def _migrations(calls: list[str]) -> Migrations:
    m = Migrations("test.common")

    @m()
    def m001_parent(db: Database) -> None:
        calls.append("m001")
        db.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        db.execute("CREATE TABLE child (id INTEGER PRIMARY KEY, "
                   "parent_id INTEGER NOT NULL REFERENCES parent(id))")

    return m


def test_pragmas_and_parent_dir(tmp_path: Path) -> None:
    db = open_db(tmp_path / "deep" / "er" / "x.db", timeout=12, synchronous="NORMAL")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] == 12_000
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    db.close()


def test_migrations_apply_once_and_foreign_keys_hold(tmp_path: Path) -> None:
    calls: list[str] = []
    path = tmp_path / "x.db"
    db = open_db(path, _migrations(calls))
    open_db(path, _migrations(calls)).close()
    assert calls == ["m001"]
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO child (parent_id) VALUES (42)")
    db.close()


def test_usable_from_another_thread(tmp_path: Path) -> None:
    db = open_db(tmp_path / "x.db")
    errors: list[BaseException] = []

    def work() -> None:
        try:
            db.execute("CREATE TABLE t (x)")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert errors == []
    db.close()


def test_concurrent_first_opens_apply_once(tmp_path: Path) -> None:
    calls: list[str] = []
    path = tmp_path / "x.db"
    errors: list[BaseException] = []

    def opener() -> None:
        try:
            open_db(path, _migrations(calls)).close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and calls == ["m001"]


def test_a_write_transaction_writes_over_what_it_read(tmp_path):
    """The race behind a rare "database is locked": a deferred transaction that read, then a
    commit by another connection, then a write. BEGIN IMMEDIATE waits for the lock instead."""
    path = tmp_path / "db.sqlite"
    a, b = open_db(path), open_db(path, timeout=10)
    a.execute("CREATE TABLE t (x INTEGER)")
    a.conn.commit()

    def other_writer() -> None:
        b.execute("INSERT INTO t VALUES (1)")
        b.conn.commit()

    with pytest.raises(sqlite3.OperationalError, match="locked"), a.atomic():
        a.execute("SELECT COUNT(*) FROM t").fetchone()
        other_writer()  # commits between the read and the write
        a.execute("INSERT INTO t VALUES (2)")
    with write_transaction(a):
        seen = a.execute("SELECT COUNT(*) FROM t").fetchone()[0]
        thread = threading.Thread(target=other_writer)
        thread.start()  # waits for the lock a holds
        a.execute("INSERT INTO t VALUES (?)", [seen + 10])
    thread.join()
    assert [r[0] for r in a.execute("SELECT x FROM t ORDER BY rowid")] == [1, 11, 1]
