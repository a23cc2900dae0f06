"""The registry's schema, only ever changed by appending a migration here.

DDL is written out (rather than `table.create`) for what sqlite-utils cannot say:
AUTOINCREMENT, so row ids (the engine's lora_int_id) are never reused even after a
delete, and CHECK constraints that keep a bad status out at the lowest level.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

__all__ = ["migrations"]

migrations = Migrations("loraswap.adapters")


@migrations()
def m001_adapters(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE adapters (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL,
            version INTEGER NOT NULL CHECK (version >= 1),
            status TEXT NOT NULL DEFAULT 'active'
                CHECK (status IN ('active', 'archived', 'deleted')),
            path TEXT NOT NULL,
            rank INTEGER NOT NULL,
            alpha REAL NOT NULL,
            target_modules TEXT NOT NULL DEFAULT '[]',
            size_bytes INTEGER NOT NULL,
            base_fingerprint TEXT NOT NULL,
            base_name TEXT NOT NULL DEFAULT '',
            base_match TEXT NOT NULL,
            source_kind TEXT NOT NULL CHECK (source_kind IN ('trained', 'imported')),
            source TEXT NOT NULL DEFAULT '',
            description TEXT NOT NULL DEFAULT '',
            tags TEXT NOT NULL DEFAULT '[]',
            metrics TEXT NOT NULL DEFAULT '{}',
            lineage TEXT NOT NULL DEFAULT '{}',
            parent TEXT,
            dataset_fingerprint TEXT,
            peft_config TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL,
            archived_at TEXT,
            deleted_at TEXT,
            UNIQUE (name, version)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE adapter_files (
            adapter_id INTEGER NOT NULL REFERENCES adapters(id),
            file TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            size_bytes INTEGER NOT NULL,
            PRIMARY KEY (adapter_id, file)
        )
        """
    )
    # Hashing a large base model's weights takes a while: remember it per file signature.
    db.execute(
        """
        CREATE TABLE adapter_base_fingerprints (
            signature TEXT PRIMARY KEY,
            fingerprint TEXT NOT NULL,
            base_path TEXT NOT NULL,
            computed_at TEXT NOT NULL
        )
        """
    )
