"""The one routine that opens the project's SQLite file.

Why one: the registry, the router, the request-log writer, the key store and every CLI
process write to the same file. They must agree on WAL, on how long to wait for a lock and on
how migrations are applied, or two processes opening a fresh file at once race each other.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

__all__ = ["open_db", "write_transaction"]

_WAL_ATTEMPTS = 50
_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


def open_db(path: Path | str, migrations: Migrations | None = None, *, timeout: float = 60,
            synchronous: str | None = None) -> Database:
    """A connection usable from any thread (callers serialise), WAL on, foreign keys on.

    `timeout` (seconds) is also the busy timeout: writers wait that long for a lock.
    `synchronous` (e.g. "NORMAL") trades the last commits on power loss for fewer fsyncs;
    None keeps SQLite's default (FULL). The given `migrations` are applied by exactly one
    process: inside BEGIN IMMEDIATE, where `apply` re-reads what is still pending.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = Database(sqlite3.connect(str(path), timeout=timeout, check_same_thread=False))
    db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    _use_wal(db)
    db.execute("PRAGMA foreign_keys = ON")
    if synchronous is not None:
        if synchronous.upper() not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}")
        db.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    if migrations is not None and migrations.pending(db):
        _apply(db, migrations)
    return db


@contextmanager
def write_transaction(db: Database) -> Iterator[Database]:
    """A transaction that reads and then writes: BEGIN IMMEDIATE, nested as a savepoint.

    Why not `db.atomic()`: its BEGIN is deferred, so the transaction reads a snapshot first and
    asks for the write lock later; if another connection (the request-log writer, another
    process) committed in between, SQLite cannot upgrade the stale snapshot and fails at once
    with "database is locked", whatever the busy timeout. BEGIN IMMEDIATE takes the write lock
    first (waiting up to the busy timeout), so what it reads is what it writes over.
    """
    if db.conn.in_transaction:
        with db.atomic():
            yield db
        return
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        raise
    db.conn.execute("COMMIT")


def _use_wal(db: Database) -> None:
    """Switching needs a moment with the file to itself; retry while another process does it."""
    for attempt in range(_WAL_ATTEMPTS):
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError:
            time.sleep(0.05 * (attempt + 1))


def _apply(db: Database, migrations: Migrations) -> None:
    # BEGIN IMMEDIATE serialises processes opening a fresh file at once; apply() nests its
    # own savepoints inside it.
    with write_transaction(db):
        migrations.apply(db)
