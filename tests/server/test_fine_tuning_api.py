"""`/v1/files` and `/v1/fine_tuning/jobs` in-process: the real app (fake engine), real SQLite,
the official client, and the real worker training the tiny base for a few steps.

What learning looks like is the slow test's (tests/loraswap/test_fine_tuning_e2e.py); here:
the wire formats the client parses, every refusal named, ownership, and a job's whole life.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time

import openai
import pytest
from fastapi.testclient import TestClient
from openai import OpenAI

from training.taskworld import make_examples


def _client(http: TestClient, key: str = "unused") -> OpenAI:
    return OpenAI(base_url="http://testserver/v1", api_key=key, http_client=http, max_retries=0)


def _jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _upper(n: int, seed: int = 0) -> bytes:
    return _jsonl(ex.row() for ex in make_examples("upper", "train", n, seed=seed))


def _drain(parts) -> int:
    """Run the queued jobs with a real worker on the app's data directory; how many ran."""
    from loraswap.finetune_worker import Worker

    worker = Worker(parts.extra["settings"])
    try:
        return worker.run(threading.Event(), once=True)
    finally:
        worker.close()


@pytest.fixture
def served(inprocess):
    parts = inprocess()
    with TestClient(parts.app) as http:
        yield parts, http


def test_files_are_stored_listed_read_and_deleted(served):
    parts, http = served
    client = _client(http)
    data = _upper(12)
    up = client.files.create(file=("upper.jsonl", io.BytesIO(data)), purpose="fine-tune")
    assert up.id.startswith("file-") and up.bytes == len(data) and up.filename == "upper.jsonl"
    assert up.model_extra["sha256"] == hashlib.sha256(data).hexdigest()
    assert client.files.retrieve(up.id).bytes == len(data)
    assert [f.id for f in client.files.list(purpose="fine-tune").data] == [up.id]
    assert client.files.content(up.id).read() == data
    assert client.files.delete(up.id).deleted
    with pytest.raises(openai.NotFoundError) as gone:
        client.files.retrieve(up.id)
    assert gone.value.body["param"] == "file_id"
    with pytest.raises(openai.BadRequestError) as bad:
        client.files.create(file=("x.jsonl", io.BytesIO(data)), purpose="assistants")
    assert bad.value.body["param"] == "purpose"


@pytest.mark.parametrize(("content", "fragment"), [
    (b"this is not json\n" * 12, "line 1"),
    (_jsonl({"prompt": "p", "chosen": "a", "rejected": "b"} for _ in range(12)), "line 1"),
    (_upper(3), "too-few-rows"),
])
def test_a_bad_training_file_is_refused_naming_the_line_and_leaves_no_job(served, content,
                                                                          fragment):
    _, http = served
    client = _client(http)
    f = client.files.create(file=("d.jsonl", io.BytesIO(content)), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.create(model="loraswap-base", training_file=f.id)
    body = refused.value.body
    assert body["param"] == "training_file" and fragment in body["message"], body
    assert client.fine_tuning.jobs.list().data == []


def test_an_unknown_model_or_option_is_refused_by_field(served):
    _, http = served
    client = _client(http)
    f = client.files.create(file=("d.jsonl", io.BytesIO(_upper(12))), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as unknown:
        client.fine_tuning.jobs.create(model="no-such-model", training_file=f.id)
    assert unknown.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as bad_epochs:
        client.fine_tuning.jobs.create(model="loraswap-base", training_file=f.id,
                                       hyperparameters={"n_epochs": 0})
    assert "n_epochs" in bad_epochs.value.body["param"]
    with pytest.raises(openai.BadRequestError) as bad_rank:
        client.fine_tuning.jobs.create(model="loraswap-base", training_file=f.id,
                                       extra_body={"loraswap": {"rank": 4}})
    assert bad_rank.value.body["param"] == "loraswap.rank"
    with pytest.raises(openai.BadRequestError) as no_file:
        client.fine_tuning.jobs.create(model="loraswap-base", training_file="file-nope")
    assert no_file.value.body["param"] == "training_file"
    assert client.fine_tuning.jobs.list().data == []


def test_keys_see_only_their_own_files_and_jobs(served):
    parts, http = served
    _, alice = parts.keys.create("alice", "fine-tune")
    _, bob = parts.keys.create("bob", "fine-tune")
    _, reader = parts.keys.create("reader", "inference")
    parts.keys.refresh()
    a, b = _client(http, alice), _client(http, bob)
    f = a.files.create(file=("d.jsonl", io.BytesIO(_upper(12))), purpose="fine-tune")
    assert b.files.list().data == []
    with pytest.raises(openai.NotFoundError):
        b.files.retrieve(f.id)
    with pytest.raises(openai.BadRequestError) as theirs:
        b.fine_tuning.jobs.create(model="loraswap-base", training_file=f.id)
    assert theirs.value.body["param"] == "training_file"
    job = a.fine_tuning.jobs.create(model="loraswap-base", training_file=f.id)
    assert [j.id for j in a.fine_tuning.jobs.list().data] == [job.id]
    assert b.fine_tuning.jobs.list().data == []
    with pytest.raises(openai.NotFoundError):
        b.fine_tuning.jobs.retrieve(job.id)
    with pytest.raises(openai.PermissionDeniedError):
        _client(http, reader).files.list()


def test_a_queued_job_cancels_at_once_and_a_finished_one_cannot(served):
    _, http = served
    client = _client(http)
    f = client.files.create(file=("d.jsonl", io.BytesIO(_upper(12))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="loraswap-base", training_file=f.id, seed=3)
    assert job.status == "queued" and job.seed == 3
    assert job.hyperparameters.n_epochs == 4  # auto: the SFT loop's default, resolved
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.cancel(job.id)
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id).data]
    assert messages[0] == "Job cancelled before it started"
    assert any(m.startswith("Validating training file") for m in messages)


def test_a_job_trains_registers_and_is_served_under_its_fine_tuned_name(served):
    parts, http = served

    client = _client(http)
    train = client.files.create(file=("t.jsonl", io.BytesIO(_upper(24))), purpose="fine-tune")
    val = client.files.create(file=("v.jsonl", io.BytesIO(_upper(12, seed=1))),
                              purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="loraswap-base", training_file=train.id, validation_file=val.id, suffix="upper",
        hyperparameters={"n_epochs": 2, "batch_size": 8},
        extra_body={"loraswap": {"rank": 8, "eval_limit": 4}})
    assert job.status == "queued" and job.user_provided_suffix == "upper"
    assert _drain(parts) == 1
    done = client.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model == f"ft:loraswap-base:upper:{job.id}"
    assert done.trained_tokens and done.trained_tokens > 0
    version = parts.registry.get("upper@1")
    assert version.lineage["fine_tuning_job"] == job.id
    assert version.lineage["training_file"] == train.id
    assert version.lineage["hyperparameters"]["batch_size"] == 8
    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    metrics = [e.data for e in events if e.type == "metrics"]
    assert len(metrics) >= 2 and all(m["train_loss"] is not None for m in metrics)
    assert events[0].message == "The job has successfully completed"
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == sorted(
        (m["step"] for m in metrics), reverse=True)[:len(checkpoints)]
    csv_text = client.files.content(done.result_files[0]).read().decode()
    assert csv_text.splitlines()[0] == "step,total_steps,train_loss,valid_loss"
    assert len(csv_text.splitlines()) == len(metrics) + 1
    deadline = time.monotonic() + 10  # the server re-reads aliases every reconcile_interval
    while done.fine_tuned_model not in {m.id for m in client.models.list().data}:
        assert time.monotonic() < deadline, "the fine-tuned model never appeared"
        time.sleep(0.2)
    chat = client.chat.completions.create(model=done.fine_tuned_model, max_tokens=16,
                                          messages=[{"role": "user", "content": "hi"}])
    assert chat.choices[0].message.content == "[upper@1]"  # the fake engine names the version


def test_a_stopped_worker_requeues_its_job_and_the_next_one_resumes_it(served):
    parts, http = served
    from loraswap.finetune_worker import Worker

    client = _client(http)
    train = client.files.create(file=("t.jsonl", io.BytesIO(_upper(64))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="loraswap-base", training_file=train.id,
                                         hyperparameters={"n_epochs": 6, "batch_size": 4},
                                         extra_body={"loraswap": {"eval_limit": 2}})
    stop = threading.Event()
    worker = Worker(parts.extra["settings"])
    thread = threading.Thread(target=worker.run, args=(stop,), kwargs={"poll_s": 0.1})
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while not [e for e in client.fine_tuning.jobs.list_events(job.id).data
                   if e.type == "metrics"]:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.1)
        stop.set()  # what SIGTERM does
        thread.join(timeout=60)
    finally:
        stop.set()
        worker.close()
    paused = client.fine_tuning.jobs.retrieve(job.id)
    assert paused.status == "queued", paused
    assert client.fine_tuning.jobs.list_events(job.id).data[0].message.startswith(
        "The worker stopped")
    assert _drain(parts) == 1
    done = client.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded" and done.model_extra["loraswap"]["attempts"] == 2
    steps = [e.data["step"] for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data
             if e.type == "metrics"]
    assert steps == sorted(set(steps), reverse=True)  # resumed: no evaluation step twice
    assert parts.registry.get(done.model_extra["loraswap"]["ref"]).metrics["resumed"] is True


def test_with_a_tracking_uri_a_job_also_logs_to_mlflow(inprocess, tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient


    store = f"file://{tmp_path / 'mlruns'}"
    parts = inprocess(mlflow_tracking_uri=store)
    with TestClient(parts.app) as http:
        client = _client(http)
        train = client.files.create(file=("t.jsonl", io.BytesIO(_upper(24))),
                                    purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model="loraswap-base", training_file=train.id,
                                             suffix="tracked",
                                             hyperparameters={"n_epochs": 1, "batch_size": 8},
                                             extra_body={"loraswap": {"eval_limit": 2}})
        assert _drain(parts) == 1
        assert client.fine_tuning.jobs.retrieve(job.id).status == "succeeded"
    mlflow.set_tracking_uri(store)
    runs = MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name("loraswap-tracked").experiment_id])
    assert [r.info.run_name for r in runs] == [job.id]
    history = MlflowClient().get_metric_history(runs[0].info.run_id, "train_loss")
    assert len(history) >= 2 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["method"] == "sft"
