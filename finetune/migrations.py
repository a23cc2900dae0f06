"""The fine-tuning API's tables (files, jobs, their events and checkpoints), created and
evolved only through sqlite-utils `Migrations`, in the project's one SQLite file."""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

__all__ = ["MIGRATION_SET", "migrations"]

MIGRATION_SET = "loraswap.finetune"
migrations = Migrations(MIGRATION_SET)


@migrations()
def m001_files_and_jobs(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE ft_files (
            id TEXT PRIMARY KEY,
            owner TEXT,
            purpose TEXT NOT NULL,
            filename TEXT NOT NULL,
            bytes INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            created_at REAL NOT NULL,
            deleted_at REAL
        )""")
    db.execute(
        """
        CREATE TABLE ft_jobs (
            id TEXT PRIMARY KEY,
            owner TEXT,
            model TEXT NOT NULL,
            spec TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            fine_tuned_model TEXT,
            registered_ref TEXT,
            trained_tokens INTEGER,
            error TEXT,
            result_files TEXT NOT NULL DEFAULT '[]',
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            worker TEXT,
            heartbeat_at REAL,
            attempts INTEGER NOT NULL DEFAULT 0
        )""")
    db.execute("CREATE INDEX ft_jobs_status ON ft_jobs (status, created_at)")
    db.execute(
        """
        CREATE TABLE ft_events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            job_id TEXT NOT NULL REFERENCES ft_jobs (id),
            created_at REAL NOT NULL,
            level TEXT NOT NULL,
            type TEXT NOT NULL,
            message TEXT NOT NULL,
            data TEXT
        )""")
    db.execute("CREATE INDEX ft_events_job ON ft_events (job_id, seq)")
    db.execute(
        """
        CREATE TABLE ft_checkpoints (
            id TEXT PRIMARY KEY,
            job_id TEXT NOT NULL REFERENCES ft_jobs (id),
            step INTEGER NOT NULL,
            created_at REAL NOT NULL,
            metrics TEXT NOT NULL
        )""")
    db.execute("CREATE INDEX ft_checkpoints_job ON ft_checkpoints (job_id, step)")
