"""Fine-tuning through the OpenAI API, end to end, with the official client only: the shared
server (real vLLM engine, real SQLite), the worker it starts, and real training.

Learning is judged on held-out prompts no training step saw (task-world `upper`, test split),
answered by the server under the job's fine-tuned model name.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import time
from pathlib import Path

import psutil
import pytest
from openai import OpenAI

from training.taskworld import make_examples

pytestmark = pytest.mark.slow

HELD_OUT = 50
RANK = {"loraswap": {"rank": 8}}  # the shared server's max_lora_rank


def _upload(client: OpenAI, rows, name: str) -> str:
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    return client.files.create(file=(name, io.BytesIO(data)), purpose="fine-tune").id


def _wait(client: OpenAI, job_id: str, until, timeout: float = 900, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if until(job):
            return job
        assert job.status not in ("failed", "cancelled") or until(job), job.error
        assert time.monotonic() < deadline, f"job {job_id} stuck in {job.status}"
        time.sleep(every)


def _final(job) -> bool:
    return job.status in ("succeeded", "failed", "cancelled")


def _metrics(client: OpenAI, job_id: str) -> list[dict]:
    events = client.fine_tuning.jobs.list_events(job_id, limit=1000).data
    return [e.data for e in reversed(events) if e.type == "metrics"]


def _worker_pid(server) -> int:
    kids = psutil.Process(server.proc.pid).children(recursive=False)
    workers = [k for k in kids if "worker" in k.cmdline()]
    assert len(workers) == 1, [k.cmdline() for k in kids]
    return workers[0].pid


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return server.client(timeout=300)


@pytest.fixture(scope="module")
def upper_job(server, client):
    """One SFT job on 1,000 task-world `upper` rows, run to the end."""
    train = _upload(client, (ex.row() for ex in make_examples("upper", "train", 1000, seed=5)),
                    "upper-train.jsonl")
    job = client.fine_tuning.jobs.create(model="loraswap-base", training_file=train,
                                         suffix="upper", seed=1, extra_body=RANK)
    return _wait(client, job.id, _final)


def test_an_sft_job_learns_upper_and_is_served_at_once(server, client, upper_job):
    assert upper_job.status == "succeeded", upper_job.error
    assert upper_job.fine_tuned_model == f"ft:loraswap-base:upper:{upper_job.id}"
    metrics = _metrics(client, upper_job.id)
    assert len(metrics) >= 4
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"] / 2, metrics
    valid = [m["valid_loss"] for m in metrics]
    assert valid[-1] < valid[0], valid
    assert upper_job.model_extra["loraswap"]["ref"] == "upper@1"
    held_out = make_examples("upper", "test", HELD_OUT, seed=11)
    right = 0
    for ex in held_out:
        out = client.chat.completions.create(model=upper_job.fine_tuned_model, max_tokens=64,
                                             temperature=0,
                                             messages=[{"role": "user", "content": ex.prompt}])
        right += out.choices[0].message.content.strip() == ex.answer
    assert right / HELD_OUT >= 0.9, f"{right}/{HELD_OUT} exact"
    assert upper_job.fine_tuned_model in {m.id for m in client.models.list().data}


def test_every_run_leaves_its_loss_curve_in_tensorboard_files(server, client, upper_job):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = list(Path(server.home, "runs", "jobs", upper_job.id).glob(
        f"*/tensorboard/{upper_job.id}"))
    assert len(runs) == 1, runs
    events = EventAccumulator(str(runs[0]))
    events.Reload()
    loss = [s.value for s in events.Scalars("train/loss")]
    val = [s.value for s in events.Scalars("val/loss")]
    assert len(loss) == _metrics(client, upper_job.id)[-1]["step"] >= 10  # one per step
    assert sum(loss[-5:]) < sum(loss[:5]) and val[-1] < val[0]
    summary = json.loads((runs[0] / "run.json").read_text())
    assert summary["status"] == "succeeded" and summary["ref"] == "upper@1"


def test_a_dpo_job_continues_the_fine_tuned_version(client, upper_job):
    rng = random.Random(0)

    def wrong(text: str) -> str:
        words = text.upper().split()
        i = rng.randrange(len(words))
        words[i] = text.split()[i]
        return " ".join(words)

    prefs = _upload(client, ({"prompt": ex.prompt, "chosen": ex.answer,
                              "rejected": wrong(ex.text)}
                             for ex in make_examples("upper", "train", 200, seed=7)),
                    "prefs.jsonl")
    job = client.fine_tuning.jobs.create(
        model="upper@1", training_file=prefs, suffix="upper",
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1, "batch_size": 16}}},
        extra_body=RANK)
    done = _wait(client, job.id, _final)
    assert done.status == "succeeded", done.error
    assert done.model_extra["loraswap"]["ref"] == "upper@2"
    assert done.model_extra["loraswap"]["parent"] == "upper@1"
    assert done.method.type == "dpo"
    out = client.chat.completions.create(model=done.fine_tuned_model, max_tokens=8,
                                         messages=[{"role": "user", "content": "upper: a b"}])
    assert out.model == "upper@2"


def test_cancelling_a_running_job_stops_it_within_seconds_and_registers_nothing(server,
                                                                                 client):
    import httpx

    train = _upload(client, (ex.row() for ex in make_examples("upper", "train", 600, seed=9)),
                    "long.jsonl")
    job = client.fine_tuning.jobs.create(model="loraswap-base", training_file=train,
                                         suffix="cancelled", hyperparameters={"n_epochs": 8},
                                         extra_body=RANK)
    _wait(client, job.id, lambda j: j.status == "running" or _final(j), timeout=600,
          every=0.2)
    time.sleep(2)  # into the training steps
    asked = time.monotonic()
    assert client.fine_tuning.jobs.cancel(job.id).status in ("running", "cancelled")
    done = _wait(client, job.id, _final, timeout=10, every=0.2)
    assert done.status == "cancelled" and time.monotonic() - asked < 10
    listed = httpx.get(server.url + "/admin/adapters", timeout=30).json()
    assert not [a for a in listed["data"] if a["name"] == "cancelled"], listed


def test_a_killed_worker_is_replaced_and_the_job_resumes_from_its_checkpoint(server, client):
    train = _upload(client, (ex.row() for ex in make_examples("upper", "train", 400, seed=13)),
                    "crash.jsonl")
    job = client.fine_tuning.jobs.create(model="loraswap-base", training_file=train,
                                         suffix="resumed", hyperparameters={"n_epochs": 2,
                                                                            "batch_size": 16},
                                         extra_body=RANK)
    _wait(client, job.id, lambda j: _final(j) or bool(_metrics(client, j.id)), timeout=600,
          every=0.2)
    before = _metrics(client, job.id)
    assert before, "the job finished before a checkpoint could be taken"
    os.kill(_worker_pid(server), signal.SIGKILL)
    done = _wait(client, job.id, _final)
    assert done.status == "succeeded", done.error
    assert done.model_extra["loraswap"]["attempts"] == 2
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=1000).data]
    assert any("stopped mid-run" in m for m in messages), messages
    assert any(m.startswith("Fine-tuning job resumed") for m in messages), messages
    steps = [m["step"] for m in _metrics(client, job.id)]
    # Resumed, not restarted: no evaluation step is taken twice.
    assert steps[0] == before[0]["step"] and steps == sorted(set(steps)), steps
