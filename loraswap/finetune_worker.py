"""The fine-tuning worker: takes queued jobs from the database and trains them, one at a time.

Why a separate process: training holds both cores for minutes and imports torch's training
stack; the server must keep answering meanwhile, and a crash in training must not take the
server down. `loraswap serve` starts one (setting `finetune_worker`); `loraswap worker` runs
one on its own against the same data directory.

Lifecycle of a job here: claim (queued -> running) -> train with hooks that write events and
checkpoints and watch for a cancel -> register the version, point the job's fine-tuned model
name at it, write the metrics CSV as a result file -> succeeded. A cancel stops the run at
its next step and registers nothing. A worker that dies leaves its job `running`; the next
worker to start (or a live one, every poll) finds it by the worker's dead pid or its stale
heartbeat and queues it again, and the run resumes from its last checkpoint.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import socket
import threading
import time
import traceback
from pathlib import Path

from finetune import Caller, Job, JobStore, open_stores
from loraswap.settings import Settings
from training.hooks import LoopHooks

__all__ = ["JobCancelled", "Worker", "worker_id"]

log = logging.getLogger("loraswap.worker")

HEARTBEAT_S = 1.0
STALE_S = 60.0  # a heartbeat this old means the worker is gone (another host's worker)
SFT_LR = 2e-3  # the SFT loop's default learning rate; the multiplier scales it
PREFERENCE_LR = 5e-5
ALL = Caller(None, admin=True)


class JobCancelled(Exception):
    """Raised from a hook when the job's cancel was asked for."""


class WorkerStopping(Exception):
    """Raised from a hook when the worker was told to stop (SIGTERM): the job goes back to
    the queue and resumes from its checkpoint under the next worker."""


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_dead(worker: str | None, heartbeat_at: float | None) -> bool:
    """A job's worker is gone: its pid is not alive here, or (another host) it stopped
    heartbeating."""
    if worker is None:
        return True
    host, _, pid = worker.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        return int(pid) != os.getpid() and not _pid_alive(int(pid))
    return heartbeat_at is None or time.time() - heartbeat_at > STALE_S


class _JobHooks(LoopHooks):
    """Events and checkpoints in the database; a cancel raises at the next step."""

    def __init__(self, jobs: JobStore, job_id: str, cancelled: threading.Event,
                 stop: threading.Event) -> None:
        self.jobs, self.job_id, self.cancelled, self.stop = jobs, job_id, cancelled, stop
        self.rows: list[dict] = []

    def on_step(self, step, total, loss, lr):
        if self.cancelled.is_set():
            raise JobCancelled
        if self.stop.is_set():
            raise WorkerStopping

    def on_eval(self, step, total, train_loss, val_loss):
        metrics = {"step": step, "total_steps": total, "train_loss": train_loss,
                   "valid_loss": val_loss}
        self.rows.append(metrics)
        self.jobs.checkpoint(self.job_id, step, metrics)

    def on_end(self, metrics):
        if self.cancelled.is_set():  # asked for during the final evaluation
            raise JobCancelled


class _Heartbeat(threading.Thread):
    def __init__(self, jobs: JobStore, job_id: str, cancelled: threading.Event) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{job_id}")
        self.jobs, self.job_id, self.cancelled = jobs, job_id, cancelled
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(HEARTBEAT_S):
            try:
                if self.jobs.heartbeat(self.job_id):
                    self.cancelled.set()
            except Exception:  # a locked database for a moment: try again next beat
                log.exception("heartbeat failed")


class Worker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.ensure_home()
        self.files, self.jobs = open_stores(settings.db_path, settings.files_dir,
                                            max_bytes=settings.max_file_mib * 2**20)
        self.id = worker_id()
        self._registry = self._router = None  # opened for the first job: idle costs little
        self.stop = threading.Event()

    @property
    def registry(self):
        from loraswap.wiring import open_registry

        if self._registry is None:
            self._registry = open_registry(self.settings)
        return self._registry

    @property
    def router(self):
        from loraswap.wiring import open_router

        if self._router is None:
            self._router = open_router(self.settings, self.registry)
        return self._router

    def close(self) -> None:
        if self._router is not None:
            self._router.close()
        if self._registry is not None:
            self._registry.close()
        self.files.db.conn.close()

    def run(self, stop: threading.Event, *, poll_s: float = 1.0, once: bool = False,
            parent_pid: int | None = None) -> int:
        """Take jobs until `stop` is set (or, `once`, until the queue is empty); the jobs
        run. `parent_pid`: exit when that process (the server) is gone."""
        ran = 0
        self.stop = stop
        while not stop.is_set():
            if parent_pid is not None and not _pid_alive(parent_pid):
                log.info("the server (pid %d) is gone; the worker stops", parent_pid)
                break
            if not self.jobs.pending():  # a read: an idle worker takes no write lock
                if once:
                    break
                stop.wait(poll_s)
                continue
            for job_id in self.jobs.recover(is_dead):
                log.warning("job %s: its worker died; queued again to resume", job_id)
            job = self.jobs.claim(self.id)
            if job is None:
                if once:
                    break
                stop.wait(poll_s)
                continue
            self.run_job(job)
            ran += 1
        return ran

    # -- one job -------------------------------------------------------------------------
    def run_job(self, job: Job) -> None:
        cancelled = threading.Event()
        beat = _Heartbeat(self.jobs, job.id, cancelled)
        beat.start()
        hooks = _JobHooks(self.jobs, job.id, cancelled, self.stop)
        try:
            result = self._train(job, hooks)
            name = self._publish(job, result.ref)
            csv_id = self._results_file(job, hooks.rows)
            self.jobs.finish(job.id, "succeeded", message="The job has successfully completed",
                             fine_tuned_model=name, registered_ref=result.ref,
                             trained_tokens=result.metrics.get("trained_tokens"),
                             result_files=[csv_id])
            log.info("job %s succeeded: %s -> %s", job.id, name, result.ref)
        except WorkerStopping:
            self.jobs.release(job.id)
            log.info("job %s: the worker stops; the job is queued again", job.id)
        except JobCancelled:
            self.jobs.finish(job.id, "cancelled", message="Job cancelled; nothing was registered")
            log.info("job %s cancelled", job.id)
        except Exception as exc:
            error = _error_of(exc)
            self.jobs.finish(job.id, "failed", message=f"Job failed: {error['message']}",
                             error=error)
            log.error("job %s failed: %s\n%s", job.id, error["message"],
                      "".join(traceback.format_exception(exc)))
        finally:
            beat.done.set()
            beat.join(timeout=5)

    def _path(self, file_id: str | None) -> Path | None:
        if file_id is None:
            return None
        return self.files.verify(self.files.get(ALL, file_id))

    def _train(self, job: Job, hooks: _JobHooks):
        from training.lora import LoraOptions

        spec, opts = job.spec, job.spec["loraswap"]
        hyper = spec["hyperparameters"]
        name = spec["suffix"] or (spec["parent"].split("@")[0] if spec["parent"]
                                  else f"ft-{job.id.removeprefix('ftjob-')[:12]}")
        runs_dir = self.settings.runs_dir / "jobs" / job.id
        lora = LoraOptions(rank=opts["rank"], alpha=opts["alpha"], dropout=opts["dropout"],
                           targets=tuple(t.strip() for t in opts["targets"].split(",")
                                         if t.strip()), rslora=opts["rslora"])
        common = dict(data=self._path(spec["training_file"]), name=name,
                      base=self.settings.base_model_dir, val=self._path(spec["validation_file"]),
                      lora=lora, max_length=opts["max_length"], task=opts["task"],
                      parent=spec["parent"], description=opts["description"] or
                      f"fine-tuning job {job.id}", tags=("fine-tuning-job",),
                      eval_limit=opts["eval_limit"])
        lineage = {"fine_tuning_job": job.id, "training_file": spec["training_file"],
                   "validation_file": spec["validation_file"], "hyperparameters": hyper,
                   "fine_tuning_method": spec["method"], "seed": spec["seed"]}
        tracking = dict(hooks=hooks, run_id=job.id, lineage=lineage,
                        mlflow_uri=self.settings.mlflow_tracking_uri,
                        max_rank=self.settings.max_lora_rank)
        if spec["kind"] == "sft":
            from training.api import SFTConfig, train_sft
            from training.sft import LoopOptions

            loop = LoopOptions(lr=SFT_LR * hyper["learning_rate_multiplier"],
                               epochs=hyper["n_epochs"], batch_size=hyper["batch_size"],
                               seed=spec["seed"], progress=False)
            cfg = SFTConfig(**common, loop=loop)
            resume = (runs_dir / name / "config.json").exists()
            return train_sft(cfg, self.registry, runs_dir=runs_dir, resume=resume, **tracking)
        from training.preference import PreferenceConfig, train_preference

        cfg = PreferenceConfig(method=spec["kind"], **common,
                               lr=PREFERENCE_LR * hyper["learning_rate_multiplier"],
                               epochs=hyper["n_epochs"], batch_size=hyper["batch_size"],
                               beta=hyper["beta"], seed=spec["seed"], progress=False)
        return train_preference(cfg, self.registry, runs_dir=runs_dir, **tracking)

    def _publish(self, job: Job, ref: str) -> str:
        """Point the job's OpenAI-style model name at the new version (an alias)."""
        from server.serving_finetune import fine_tuned_name

        name = fine_tuned_name(job.spec["base_id"], job.spec["suffix"], job.id)
        self.router.set_alias(name, ref, key_id=job.owner,
                              reason=f"fine-tuning job {job.id} succeeded")
        return name

    def _results_file(self, job: Job, rows: list[dict]) -> str:
        """The job's metrics per evaluation step as CSV, stored as a file the job owns."""
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=["step", "total_steps", "train_loss",
                                                 "valid_loss"])
        writer.writeheader()
        writer.writerows(rows)
        data = io.BytesIO(out.getvalue().encode())
        record = self.files.create(Caller(job.owner, admin=False), purpose="fine-tune-results",
                                   filename="step_metrics.csv", read=data.read, internal=True)
        return record.id


def _error_of(exc: BaseException) -> dict:
    """The job's `error`: training's own refusals by name, anything else as internal."""
    from adapters import RegistryError
    from training.data import DataError
    from training.lora import TrainingConfigError

    if isinstance(exc, DataError):
        return {"code": "invalid_training_file", "param": "training_file",
                "message": str(exc)}
    if isinstance(exc, TrainingConfigError):
        return {"code": "invalid_options", "param": None, "message": str(exc)}
    if isinstance(exc, RegistryError):
        return {"code": "registry_refused", "param": None, "message": str(exc)}
    return {"code": "internal_error", "param": None,
            "message": f"{type(exc).__name__}: {exc}"}



class WorkerSupervisor:
    """The server's worker: `loraswap worker` as a child process with the server's settings,
    started again when it dies (a crash mid-job: the new one resumes the job from its
    checkpoint). It exits by itself if the server is gone."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proc = None
        self.restarts = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _spawn(self):
        import subprocess
        import sys

        env = {**os.environ, **self.settings.to_env()}
        return subprocess.Popen([sys.executable, "-m", "loraswap", "worker", "--parent-pid",
                                 str(os.getpid())], env=env)

    def start(self) -> WorkerSupervisor:
        self.proc = self._spawn()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="worker-watch")
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            if self.proc.poll() is None:
                continue
            delay = min(30.0, 2.0 ** min(self.restarts, 5))  # a crash loop backs off
            log.warning("the fine-tuning worker (pid %d) exited with %s; starting another in "
                        "%.0f s", self.proc.pid, self.proc.returncode, delay)
            if self._stop.wait(delay):
                return
            self.restarts += 1
            self.proc = self._spawn()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: a job in training goes back to the queue (it resumes under the next
        worker); SIGKILL after `timeout`."""
        import subprocess

        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
