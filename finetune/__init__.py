"""The OpenAI fine-tuning API's state: uploaded files, jobs, their events and checkpoints.

Pure storage on the project's SQLite file (no training here): the server reads and writes it
for `/v1/files` and `/v1/fine_tuning/jobs`, and the worker (loraswap/finetune_worker.py)
takes jobs from it and runs them with training/.
"""

from __future__ import annotations

from pathlib import Path

from common.sqlite import open_db
from finetune.errors import (
    FileNotFound,
    FineTuneError,
    InvalidFile,
    JobConflict,
    JobNotFound,
    TooLarge,
)
from finetune.files import PURPOSES, RESULTS_PURPOSE, Caller, FileRecord, FileStore
from finetune.jobs import ACTIVE, FINAL, MAX_ATTEMPTS, Job, JobStore
from finetune.migrations import migrations

__all__ = ["ACTIVE", "FINAL", "MAX_ATTEMPTS", "PURPOSES", "RESULTS_PURPOSE", "Caller",
           "FileNotFound", "FileRecord", "FileStore", "FineTuneError", "InvalidFile", "Job",
           "JobConflict", "JobNotFound", "JobStore", "TooLarge", "open_stores"]


def open_stores(db_path: Path, files_dir: Path, *, max_bytes: int) -> tuple[FileStore, JobStore]:
    """Both stores on one connection to the project's database (migrated first)."""
    db = open_db(db_path, migrations)
    return FileStore(db, files_dir, max_bytes=max_bytes), JobStore(db)
