"""API keys: stored as sha256 hashes in the one SQLite file, checked per request.

Why sha256 and not a slow KDF: the keys are 192-bit random tokens, not passwords; a fast hash
is enough against a stolen database and keeps the per-request check cheap. Scopes:
`inference` (the /v1 routes) and `admin` (everything, admin routes included).
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

__all__ = ["SCOPES", "KeyStore", "migrations"]

SCOPES = ("inference", "admin")
PREFIX = "lsk-"

migrations = Migrations("loraswap.server")


@migrations()
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


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class KeyStore:
    def __init__(self, db_path: Path) -> None:
        Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        self.db = Database(sqlite3.connect(str(db_path), timeout=60, check_same_thread=False))
        self._lock = threading.Lock()
        with self._lock:
            self.db.execute("PRAGMA journal_mode=wal")
            migrations.apply(self.db)

    def create(self, name: str, scope: str = "inference") -> tuple[dict, str]:
        """A new key; the plaintext is returned once and never stored."""
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        token = PREFIX + secrets.token_urlsafe(24)
        row = {"name": name, "prefix": token[:10], "hash": _hash(token), "scope": scope,
               "created_at": _now(), "revoked_at": None}
        with self._lock, self.db.conn:
            cur = self.db.execute(
                "INSERT INTO api_keys (name, prefix, hash, scope, created_at) VALUES (?,?,?,?,?)",
                [row["name"], row["prefix"], row["hash"], scope, row["created_at"]])
            row["id"] = cur.lastrowid
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
                "(CAST(id AS TEXT) = ? OR name = ? OR prefix = ?)", [_now(), key, key, key])
            return cur.rowcount

    def any_active(self) -> bool:
        with self._lock:
            return self.db.execute(
                "SELECT 1 FROM api_keys WHERE revoked_at IS NULL LIMIT 1").fetchone() is not None

    def scope_of(self, token: str) -> str | None:
        """The scope of a valid, unrevoked key, else None."""
        found = self.lookup(token)
        return found[1] if found else None

    def lookup(self, token: str) -> tuple[str, str] | None:
        """(key id, scope) of a valid, unrevoked key, else None."""
        with self._lock:
            row = self.db.execute(
                "SELECT id, scope FROM api_keys WHERE hash = ? AND revoked_at IS NULL",
                [_hash(token)]).fetchone()
        return (str(row[0]), row[1]) if row else None
