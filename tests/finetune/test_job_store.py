"""The job queue on real SQLite: one claim per job, cancels, and jobs whose worker is gone."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from finetune import MAX_ATTEMPTS, Caller, FileStore, JobConflict, JobStore, TooLarge, open_stores

ALL = Caller(None, admin=True)
SPEC = {"training_file": "file-x", "validation_file": None, "method": "supervised",
        "kind": "sft", "hyperparameters": {}, "suffix": None, "seed": 1, "parent": None,
        "base_id": "b", "loraswap": {}}


@pytest.fixture
def stores(tmp_path: Path) -> tuple[FileStore, JobStore]:
    return open_stores(tmp_path / "db.sqlite", tmp_path / "files", max_bytes=1000)


def _queued(jobs: JobStore) -> str:
    job = jobs.create(ALL, "b", SPEC)
    jobs.queue(job.id, rows=10)
    return job.id


def test_a_queued_job_is_claimed_once_oldest_first(stores) -> None:
    _, jobs = stores
    first, second = _queued(jobs), _queued(jobs)
    assert jobs.claim("host:1").id == first
    assert jobs.claim("host:2").id == second
    assert jobs.claim("host:3") is None
    assert jobs.get(ALL, first).status == "running" and jobs.get(ALL, first).attempts == 1


def test_a_job_whose_worker_died_is_queued_again_then_failed_after_max_attempts(stores) -> None:
    _, jobs = stores
    job_id = _queued(jobs)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert jobs.claim("host:99").attempts == attempt
        assert jobs.recover(lambda worker, beat: False) == []  # alive: left alone
        assert jobs.recover(lambda worker, beat: worker == "host:99") == [job_id]
    job = jobs.get(ALL, job_id)
    assert job.status == "failed" and job.error["code"] == "worker_died"
    assert jobs.claim("host:1") is None


def test_a_stopping_worker_releases_its_job_to_the_queue(stores) -> None:
    _, jobs = stores
    job_id = _queued(jobs)
    jobs.claim("host:1")
    jobs.release(job_id)
    assert jobs.get(ALL, job_id).status == "queued"
    assert jobs.claim("host:2").attempts == 2


def test_cancel_is_immediate_when_queued_and_asked_for_when_running(stores) -> None:
    _, jobs = stores
    queued, running = _queued(jobs), _queued(jobs)
    assert jobs.cancel(ALL, queued).status == "cancelled"
    assert jobs.claim("host:1").id == running
    assert jobs.heartbeat(running) is False
    assert jobs.cancel(ALL, running).status == "running"
    assert jobs.heartbeat(running) is True  # the worker learns of it with its next beat
    jobs.finish(running, "cancelled", message="stopped")
    with pytest.raises(JobConflict):
        jobs.cancel(ALL, running)


def test_an_upload_over_the_limit_stores_nothing(stores, tmp_path: Path) -> None:
    files, _ = stores
    with pytest.raises(TooLarge):
        files.create(ALL, purpose="fine-tune", filename="big.jsonl",
                     read=io.BytesIO(b"x" * 1001).read)
    assert files.list(ALL) == [] and list((tmp_path / "files").iterdir()) == []
    kept = files.create(Caller("k1", admin=False), purpose="fine-tune", filename="a.jsonl",
                        read=io.BytesIO(b"{}\n").read)
    assert files.list(Caller("k2", admin=False)) == []
    assert files.list(ALL) == [kept]
