"""API keys: stored as sha256 hashes in the one SQLite file, checked per request from memory.

Why sha256 and not a slow KDF: the keys are 192-bit random tokens, not passwords; a fast hash
is enough against a stolen database and keeps the per-request check cheap. Scopes:
`inference` (the /v1 routes), `analyst` (reading experiments and their results, nothing
else: no inference, no writes) and `admin` (everything, admin routes included).

Why a cache: the request path reads no SQL. The active keys (hash -> id, scope) are held in
memory, re-read by `refresh()` (the server's reconcile loop, so a key created or revoked by
the CLI takes effect within one interval) and updated at once by writes through this object.
A key the cache does not know is looked for once more in the database before a 401
(`lookup_fresh`, server/reread.py): another ingress replica may have just created it.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from pathlib import Path

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from common.sqlite import open_db
from common.timeutil import utc_now_iso
from server.reread import MissReread

__all__ = ["SCOPES", "KeyStore", "migrations"]

SCOPES = ("inference", "analyst", "fine-tune", "admin")
PREFIX = "lsk-"


def m001_api_keys(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE api_keys (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL,
            prefix TEXT NOT NULL,
            hash TEXT NOT NULL UNIQUE,
            scope TEXT NOT NULL CHECK (scope IN ('inference', 'admin')),
            created_at TEXT NOT NULL,
            revoked_at TEXT
        )
        """
    )


def m002_analyst_scope(db: Database) -> None:
    # SQLite cannot change a CHECK constraint in place: rebuild the table with the new one.
    db.execute(
        """
        CREATE TABLE api_keys_new (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL,
            prefix TEXT NOT NULL,
            hash TEXT NOT NULL UNIQUE,
            scope TEXT NOT NULL CHECK (scope IN ('inference', 'analyst', 'admin')),
            created_at TEXT NOT NULL,
            revoked_at TEXT
        )
        """
    )
    db.execute("INSERT INTO api_keys_new SELECT id, name, prefix, hash, scope, created_at, "
               "revoked_at FROM api_keys")
    db.execute("DROP TABLE api_keys")
    db.execute("ALTER TABLE api_keys_new RENAME TO api_keys")


def m003_fine_tune_scope(db: Database) -> None:
    # A fine-tune key: inference plus its own files and fine-tuning jobs (/v1/files,
    # /v1/fine_tuning). Same rebuild as m002, for the same reason.
    db.execute(
        """
        CREATE TABLE api_keys_new (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL,
            prefix TEXT NOT NULL,
            hash TEXT NOT NULL UNIQUE,
            scope TEXT NOT NULL CHECK (scope IN ('inference', 'analyst', 'fine-tune', 'admin')),
            created_at TEXT NOT NULL,
            revoked_at TEXT
        )
        """
    )
    db.execute("INSERT INTO api_keys_new SELECT id, name, prefix, hash, scope, created_at, "
               "revoked_at FROM api_keys")
    db.execute("DROP TABLE api_keys")
    db.execute("ALTER TABLE api_keys_new RENAME TO api_keys")


# This package's steps, oldest first (never edited once shipped; add m004_... at the end).
migrations = Migrations("loraswap.server")
for _step in (m001_api_keys, m002_analyst_scope, m003_fine_tune_scope):
    migrations()(_step)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class KeyStore:
    def __init__(self, db_path: Path) -> None:
        self.db = open_db(db_path, migrations)
        self._lock = threading.Lock()
        self._active: dict[str, tuple[str, str]] = {}  # sha256 -> (key id, scope)
        self.miss_reread = MissReread(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        """Re-read the active keys (SQL: not on an event loop)."""
        with self._lock:
            rows = self.db.execute(
                "SELECT hash, id, scope FROM api_keys WHERE revoked_at IS NULL").fetchall()
        self._active = {h: (str(i), scope) for h, i, scope in rows}

    def create(self, name: str, scope: str = "inference") -> tuple[dict, str]:
        """A new key; the plaintext is returned once and never stored."""
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        token = PREFIX + secrets.token_urlsafe(24)
        row = {"name": name, "prefix": token[:10], "hash": _hash(token), "scope": scope,
               "created_at": utc_now_iso(), "revoked_at": None}
        with self._lock, self.db.conn:
            cur = self.db.execute(
                "INSERT INTO api_keys (name, prefix, hash, scope, created_at) VALUES (?,?,?,?,?)",
                [row["name"], row["prefix"], row["hash"], scope, row["created_at"]])
            row["id"] = cur.lastrowid
        self.refresh()
        row.pop("hash")
        return row, token

    def list(self, include_revoked: bool = False) -> list[dict]:
        sql = "SELECT id, name, prefix, scope, created_at, revoked_at FROM api_keys"
        if not include_revoked:
            sql += " WHERE revoked_at IS NULL"
        with self._lock:
            return list(self.db.query(sql + " ORDER BY id"))

    def revoke(self, key: str) -> int:
        """Revoke by id, name or prefix; the number of keys revoked."""
        with self._lock, self.db.conn:
            cur = self.db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE revoked_at IS NULL AND "
                "(CAST(id AS TEXT) = ? OR name = ? OR prefix = ?)",
                [utc_now_iso(), key, key, key])
            count = cur.rowcount
        self.refresh()
        return count

    def any_active(self) -> bool:
        return bool(self._active)

    def scope_of(self, token: str) -> str | None:
        """The scope of a valid, unrevoked key, else None."""
        found = self.lookup(token)
        return found[1] if found else None

    def lookup(self, token: str) -> tuple[str, str] | None:
        """(key id, scope) of a valid, unrevoked key, else None. Memory only."""
        return self._active.get(_hash(token))

    async def lookup_fresh(self, token: str) -> tuple[str, str] | None:
        """`lookup`, re-reading the keys once if the cache does not know `token`."""
        found = self.lookup(token)
        if found is None:
            await self.miss_reread.after_miss(time.monotonic())
            found = self.lookup(token)
        return found

    def close(self) -> None:
        with self._lock:
            self.db.close()
