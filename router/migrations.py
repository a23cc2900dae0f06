"""The router's tables, created and evolved only through sqlite-utils `Migrations`.

They live in the same SQLite file as the registry (one file, WAL), under their own
migration set so the two parts evolve independently.
"""

from __future__ import annotations

from pathlib import Path

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

import common.sqlite

__all__ = ["MIGRATION_SET", "migrations", "open_db"]

MIGRATION_SET = "loraswap.router"
migrations = Migrations(MIGRATION_SET)


@migrations()
def m001_initial(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE experiments (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            alias TEXT NOT NULL,
            salt TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'draft',
            metric TEXT NOT NULL DEFAULT 'thumbs',
            control TEXT NOT NULL,
            retention INTEGER NOT NULL DEFAULT 0,
            score_min REAL NOT NULL DEFAULT 1,
            score_max REAL NOT NULL DEFAULT 5,
            labels TEXT NOT NULL DEFAULT '[]',
            description TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL,
            started_at REAL,
            stopped_at REAL,
            weights_changed_at REAL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE experiment_variants (
            experiment_id INTEGER NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            ref TEXT NOT NULL,
            weight INTEGER NOT NULL,
            PRIMARY KEY (experiment_id, ref)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE requests (
            id TEXT PRIMARY KEY,
            ts REAL NOT NULL,
            alias TEXT NOT NULL,
            experiment_id INTEGER,
            variant TEXT,
            exposed INTEGER NOT NULL DEFAULT 0,
            model_served TEXT NOT NULL,
            unit TEXT,
            user TEXT,
            api_key_id TEXT,
            endpoint TEXT NOT NULL DEFAULT 'chat.completions',
            status_code INTEGER NOT NULL DEFAULT 200,
            latency_ms REAL,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            finish_reason TEXT,
            prompt TEXT,
            output TEXT
        )
        """
    )
    db.execute("CREATE INDEX requests_experiment ON requests(experiment_id, variant)")
    db.execute("CREATE INDEX requests_model ON requests(model_served)")
    db.execute(
        """
        CREATE TABLE feedback (
            id INTEGER PRIMARY KEY,
            client_id TEXT UNIQUE,
            request_id TEXT NOT NULL REFERENCES requests(id),
            kind TEXT NOT NULL,
            value REAL,
            label TEXT,
            correction TEXT,
            other_request_id TEXT REFERENCES requests(id),
            comment TEXT,
            user TEXT,
            api_key_id TEXT,
            ts REAL NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX feedback_request ON feedback(request_id)")
    db.execute("CREATE INDEX feedback_other ON feedback(other_request_id)")


@migrations()
def m002_request_outputs(db: Database) -> None:
    # Every choice's text, for requests with several prompts or n > 1 (JSON list; retained
    # like `output`, which keeps the first choice's text for the export).
    db.execute("ALTER TABLE requests ADD COLUMN outputs TEXT")


@migrations()
def m003_bandit_mode(db: Database) -> None:
    # 'fixed': weights change only by hand; 'bandit': Thompson sampling sets them on a schedule.
    db.execute("ALTER TABLE experiments ADD COLUMN mode TEXT NOT NULL DEFAULT 'fixed'")
    db.execute("ALTER TABLE experiments ADD COLUMN min_share REAL NOT NULL DEFAULT 0.1")
    db.execute("ALTER TABLE experiments ADD COLUMN bandit_interval_s REAL NOT NULL DEFAULT 60")
    db.execute("CREATE INDEX requests_experiment_unit ON requests(experiment_id, unit, id)")


@migrations()
def m004_guardrails(db: Database) -> None:
    # Limits per experiment (router/guardrails.py) and what happened because of them.
    db.execute("ALTER TABLE experiments ADD COLUMN guardrails TEXT NOT NULL DEFAULT '{}'")
    db.execute(
        """
        CREATE TABLE experiment_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            experiment_id INTEGER NOT NULL REFERENCES experiments(id),
            ts REAL NOT NULL,
            kind TEXT NOT NULL,
            variant TEXT,
            reason TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX experiment_events_experiment ON experiment_events(experiment_id, id)")


@migrations()
def m005_aliases(db: Database) -> None:
    # Aliases as pointers (router/aliases.py): what an alias serves when no experiment runs on
    # it, its routing rules, and every change with who, when and why.
    db.execute(
        """
        CREATE TABLE aliases (
            name TEXT PRIMARY KEY,
            target TEXT NOT NULL,
            system_prompt TEXT,
            rules TEXT NOT NULL DEFAULT '[]',
            revision INTEGER NOT NULL DEFAULT 1,
            updated_at REAL NOT NULL,
            updated_by TEXT
        )
        """
    )
    db.execute(
        """
        CREATE TABLE alias_history (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            alias TEXT NOT NULL,
            revision INTEGER NOT NULL,
            ts REAL NOT NULL,
            key_id TEXT,
            kind TEXT NOT NULL,
            from_target TEXT,
            to_target TEXT,
            rules TEXT,
            state TEXT,
            reason TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX alias_history_alias ON alias_history(alias, id)")
    # Prompt variants: a variant's key (`ref`) may name a system prompt over a served ref.
    db.execute("ALTER TABLE experiment_variants ADD COLUMN serves TEXT")
    db.execute("ALTER TABLE experiment_variants ADD COLUMN system_prompt TEXT")
    db.execute("ALTER TABLE experiments ADD COLUMN auto_promote INTEGER NOT NULL DEFAULT 0")
    # Aliases of experiments already running or paused keep serving their control after a stop.
    rows = db.execute("SELECT name, alias, control, COALESCE(started_at, created_at) FROM "
                      "experiments WHERE status IN ('running', 'paused')").fetchall()
    for name, alias, control, ts in rows:
        db.execute("INSERT OR IGNORE INTO aliases (name, target, updated_at) VALUES (?, ?, ?)",
                   [alias, control, ts])
        db.execute("INSERT INTO alias_history (alias, revision, ts, kind, to_target, reason) "
                   "VALUES (?, 1, ?, 'set', ?, ?)",
                   [alias, ts, control, f"created for experiment {name} (its control)"])


def open_db(path: Path) -> Database:
    """The shared file with the router's tables migrated (common.sqlite.open_db).

    synchronous=NORMAL: the request log commits a batch every few milliseconds under load;
    in WAL mode that can lose the last batches on power loss, never corrupt the file.
    """
    return common.sqlite.open_db(path, migrations, synchronous="NORMAL")
