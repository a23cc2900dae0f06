"""Fine-tuning jobs as rows: the queue the worker takes from, their events and checkpoints.

Why the database is the queue: the server and the worker are separate processes (a worker
may run on its own, `loraswap worker`), and a job must outlive both. Every change of state
is one transaction that also appends the event saying so, so the events never disagree with
the status. A worker claims a job with a conditional UPDATE (only a `queued` job can be
claimed, by one worker), heartbeats while it trains, and a job whose worker died is found
by the next worker (`recover`) and queued again to resume from its checkpoint.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from common.sqlite import write_transaction
from finetune.errors import JobConflict, JobNotFound
from finetune.files import Caller

__all__ = ["ACTIVE", "FINAL", "Job", "JobStore", "MAX_ATTEMPTS"]

FINAL = ("succeeded", "failed", "cancelled")
ACTIVE = ("validating_files", "queued", "running")
MAX_ATTEMPTS = 3  # runs of one job (the first and two resumes after a dead worker)

_COLUMNS = ("id, owner, model, spec, status, created_at, started_at, finished_at, "
            "fine_tuned_model, registered_ref, trained_tokens, error, result_files, "
            "cancel_requested, worker, heartbeat_at, attempts")


@dataclass(frozen=True)
class Job:
    id: str
    owner: str | None
    model: str
    spec: dict[str, Any]  # files, method, hyperparameters, suffix, seed, loraswap options
    status: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    fine_tuned_model: str | None
    registered_ref: str | None
    trained_tokens: int | None
    error: dict | None
    result_files: list[str]
    cancel_requested: bool
    worker: str | None
    heartbeat_at: float | None
    attempts: int


def _job(row: tuple) -> Job:
    values = list(row)
    values[3] = json.loads(values[3])
    values[11] = json.loads(values[11]) if values[11] else None
    values[12] = json.loads(values[12])
    values[13] = bool(values[13])
    return Job(*values)


class JobStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = threading.Lock()  # one connection, shared by the server's threads

    # -- reads ---------------------------------------------------------------------------
    def _find(self, job_id: str) -> Job | None:
        with self._lock:
            row = self.db.execute(f"SELECT {_COLUMNS} FROM ft_jobs WHERE id = ?",
                                  [job_id]).fetchone()
        return _job(row) if row else None

    def pending(self) -> bool:
        """Any job queued or running (a worker's cheap look before it takes a lock)."""
        with self._lock:
            return self.db.execute("SELECT 1 FROM ft_jobs WHERE status IN ('queued', "
                                   "'running') LIMIT 1").fetchone() is not None

    def get(self, caller: Caller, job_id: str) -> Job:
        job = self._find(job_id)
        if job is None or not caller.sees(job.owner):
            raise JobNotFound(f"No such fine-tuning job: {job_id}", param="fine_tuning_job_id",
                              code="job_not_found")
        return job

    def list(self, caller: Caller, *, after: str | None = None, limit: int = 20) -> list[Job]:
        """Newest first; `after`: the last id of the previous page."""
        with self._lock:
            rows = self.db.execute(f"SELECT {_COLUMNS} FROM ft_jobs ORDER BY created_at DESC, "
                                   "id DESC").fetchall()
        jobs = [j for j in map(_job, rows) if caller.sees(j.owner)]
        if after is not None:
            ids = [j.id for j in jobs]
            jobs = jobs[ids.index(after) + 1:] if after in ids else []
        return jobs[:limit]

    def events(self, job: Job, *, after: str | None = None, limit: int = 20) -> list[dict]:
        """Newest first, as OpenAI lists them; `after`: an event id of the previous page."""
        where, args = "job_id = ?", [job.id]
        if after is not None and after.startswith("ftevent-"):
            where += " AND seq < ?"
            args.append(int(after.removeprefix("ftevent-"), 16))
        with self._lock:
            rows = self.db.execute(
                f"SELECT seq, created_at, level, type, message, data FROM ft_events WHERE "
                f"{where} ORDER BY seq DESC LIMIT ?", [*args, limit]).fetchall()
        return [{"id": f"ftevent-{seq:024x}", "created_at": created, "level": level,
                 "type": kind, "message": message, "data": json.loads(data) if data else None}
                for seq, created, level, kind, message, data in rows]

    def checkpoints(self, job: Job, *, after: str | None = None, limit: int = 10) -> list[dict]:
        with self._lock:
            rows = self.db.execute("SELECT id, step, created_at, metrics FROM ft_checkpoints "
                                   "WHERE job_id = ? ORDER BY step DESC", [job.id]).fetchall()
        found = [{"id": i, "step": step, "created_at": created, "metrics": json.loads(m)}
                 for i, step, created, m in rows]
        if after is not None:
            ids = [c["id"] for c in found]
            found = found[ids.index(after) + 1:] if after in ids else []
        return found[:limit]

    # -- writes (each with the event that says so) ---------------------------------------
    def _event(self, job_id: str, message: str, *, level: str = "info", kind: str = "message",
               data: dict | None = None) -> None:
        self.db.execute("INSERT INTO ft_events (job_id, created_at, level, type, message, data) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        [job_id, time.time(), level, kind, message,
                         json.dumps(data) if data is not None else None])

    def event(self, job_id: str, message: str, **kw: Any) -> None:
        with self._lock, write_transaction(self.db):
            self._event(job_id, message, **kw)

    def create(self, caller: Caller, model: str, spec: dict[str, Any]) -> Job:
        job_id = "ftjob-" + secrets.token_hex(12)
        with self._lock, write_transaction(self.db):
            self.db.execute(
                "INSERT INTO ft_jobs (id, owner, model, spec, status, created_at) "
                "VALUES (?, ?, ?, ?, 'validating_files', ?)",
                [job_id, caller.key_id, model, json.dumps(spec), time.time()])
            self._event(job_id, f"Created fine-tuning job: {job_id}")
            self._event(job_id, "Validating training file: " + spec["training_file"]
                        + (" and validation file: " + spec["validation_file"]
                           if spec.get("validation_file") else ""))
        return self.get(caller, job_id)

    def drop(self, job_id: str) -> None:
        """A job whose files failed validation at creation: the request was refused, so
        nothing of it stays."""
        with self._lock, write_transaction(self.db):
            self.db.execute("DELETE FROM ft_events WHERE job_id = ?", [job_id])
            self.db.execute("DELETE FROM ft_jobs WHERE id = ?", [job_id])

    def queue(self, job_id: str, rows: int) -> None:
        with self._lock, write_transaction(self.db):
            self.db.execute("UPDATE ft_jobs SET status = 'queued' WHERE id = ? AND "
                            "status = 'validating_files'", [job_id])
            self._event(job_id, f"Files validated ({rows} training rows), moving job to "
                        "queued state")

    def cancel(self, caller: Caller, job_id: str) -> Job:
        job = self.get(caller, job_id)
        with self._lock, write_transaction(self.db):
            status = self.db.execute("SELECT status FROM ft_jobs WHERE id = ?",
                                     [job_id]).fetchone()[0]
            if status in FINAL:
                raise JobConflict(f"Job {job_id} has already {status}; only a job that has not "
                                  "finished can be cancelled", param="fine_tuning_job_id",
                                  code="job_not_cancellable")
            if status == "running":  # the worker stops at its next step and says so
                self.db.execute("UPDATE ft_jobs SET cancel_requested = 1 WHERE id = ?",
                                [job_id])
                self._event(job_id, "Cancellation requested")
            else:
                self.db.execute("UPDATE ft_jobs SET status = 'cancelled', finished_at = ?, "
                                "cancel_requested = 1 WHERE id = ?", [time.time(), job_id])
                self._event(job_id, "Job cancelled before it started")
        return self.get(caller, job.id)

    def claim(self, worker: str) -> Job | None:
        """The oldest queued job, now running on `worker`; None when the queue is empty."""
        with self._lock, write_transaction(self.db):
            row = self.db.execute("SELECT id, attempts FROM ft_jobs WHERE status = 'queued' "
                                  "ORDER BY created_at, id LIMIT 1").fetchone()
            if row is None:
                return None
            job_id, attempts = row
            now = time.time()
            self.db.execute("UPDATE ft_jobs SET status = 'running', worker = ?, heartbeat_at = ?, "
                            "started_at = COALESCE(started_at, ?), attempts = attempts + 1 "
                            "WHERE id = ?", [worker, now, now, job_id])
            self._event(job_id, "Fine-tuning job started" if attempts == 0 else
                        f"Fine-tuning job resumed (attempt {attempts + 1})")
        return self._find(job_id)

    def heartbeat(self, job_id: str) -> bool:
        """Record the worker alive; True when a cancel was asked for."""
        with self._lock, write_transaction(self.db):
            self.db.execute("UPDATE ft_jobs SET heartbeat_at = ? WHERE id = ?",
                            [time.time(), job_id])
            return bool(self.db.execute("SELECT cancel_requested FROM ft_jobs WHERE id = ?",
                                        [job_id]).fetchone()[0])

    def checkpoint(self, job_id: str, step: int, metrics: dict) -> None:
        with self._lock, write_transaction(self.db):
            self.db.execute("INSERT OR REPLACE INTO ft_checkpoints (id, job_id, step, created_at,"
                            " metrics) VALUES (?, ?, ?, ?, ?)",
                            [f"ftckpt-{job_id.removeprefix('ftjob-')}-{step}", job_id, step,
                             time.time(), json.dumps(metrics)])
            self._event(job_id, f"Step {step}: training loss={metrics.get('train_loss')}"
                        + (f", validation loss={metrics['valid_loss']}"
                           if metrics.get("valid_loss") is not None else ""),
                        kind="metrics", data=metrics)

    def finish(self, job_id: str, status: str, *, message: str, error: dict | None = None,
               fine_tuned_model: str | None = None, registered_ref: str | None = None,
               trained_tokens: int | None = None, result_files: list[str] | None = None) -> None:
        assert status in FINAL
        with self._lock, write_transaction(self.db):
            self.db.execute(
                "UPDATE ft_jobs SET status = ?, finished_at = ?, error = ?, "
                "fine_tuned_model = ?, registered_ref = ?, trained_tokens = ?, "
                "result_files = ?, worker = NULL WHERE id = ?",
                [status, time.time(), json.dumps(error) if error else None, fine_tuned_model,
                 registered_ref, trained_tokens, json.dumps(result_files or []), job_id])
            self._event(job_id, message, level="error" if status == "failed" else "info")

    def release(self, job_id: str) -> None:
        """A running job whose worker is stopping: back to the queue, to resume."""
        with self._lock, write_transaction(self.db):
            self.db.execute("UPDATE ft_jobs SET status = 'queued', worker = NULL WHERE id = ? "
                            "AND status = 'running'", [job_id])
            self._event(job_id, "The worker stopped; the job is queued again and resumes "
                        "from its last checkpoint", level="warn")

    def recover(self, is_dead) -> list[str]:
        """Jobs whose worker died (`is_dead(worker, heartbeat_at)`): queued again to resume
        from their checkpoint, or failed once they have used MAX_ATTEMPTS runs."""
        with self._lock, write_transaction(self.db):
            rows = self.db.execute("SELECT id, worker, heartbeat_at, attempts FROM ft_jobs "
                                   "WHERE status = 'running'").fetchall()
            found = []
            for job_id, worker, beat, attempts in rows:
                if not is_dead(worker, beat):
                    continue
                found.append(job_id)
                if attempts >= MAX_ATTEMPTS:
                    error = {"code": "worker_died", "param": None,
                             "message": f"the worker running this job died {attempts} times; "
                                        "giving up"}
                    self.db.execute("UPDATE ft_jobs SET status = 'failed', finished_at = ?, "
                                    "error = ?, worker = NULL WHERE id = ?",
                                    [time.time(), json.dumps(error), job_id])
                    self._event(job_id, error["message"], level="error")
                else:
                    self.db.execute("UPDATE ft_jobs SET status = 'queued', worker = NULL "
                                    "WHERE id = ?", [job_id])
                    self._event(job_id, f"The worker ({worker}) stopped mid-run; the job is "
                                "queued again and resumes from its last checkpoint",
                                level="warn")
        return found
