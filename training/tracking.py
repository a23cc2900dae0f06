"""Experiment tracking for every training run: TensorBoard event files, and MLflow when a
tracking URI is set.

Where: `<runs>/<name>/tensorboard/<run id>/`, beside the run's checkpoint but kept after the
run (the checkpoint is removed once the version is registered). `run.json` there says what
the run was and how it ended, for `loraswap runs list`.

    tensorboard --logdir ~/.local/share/loraswap/runs
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from training.hooks import LoopHooks

__all__ = ["TRACKING_DIR", "Tracker", "list_runs", "new_run_id"]

TRACKING_DIR = "tensorboard"


def new_run_id(method: str) -> str:
    return time.strftime("%Y%m%d-%H%M%S") + f"-{method}-{time.time_ns() % 10**6:06d}"


class Tracker(LoopHooks):
    """Scalars to TensorBoard (train/loss, train/learning_rate, val/loss, eval/*)."""

    def __init__(self, runs_dir: Path, name: str, method: str, config: dict[str, Any],
                 *, run_id: str | None = None, mlflow_uri: str | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.dir = Path(runs_dir) / name / TRACKING_DIR / (run_id or new_run_id(method))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.summary = {"name": name, "method": method, "run_id": self.dir.name,
                        "started_at": time.time(), "status": "running", "config": config}
        self._write_summary()
        self.writer = SummaryWriter(log_dir=str(self.dir))
        self.mlflow = None
        if mlflow_uri:
            if mlflow_uri.startswith("file:") or "://" not in mlflow_uri:
                # MLflow 3 refuses its file store unless told it is wanted (the store still
                # works; MLflow only stopped developing it). A directory is what we are given.
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            import mlflow

            mlflow.set_tracking_uri(mlflow_uri)
            mlflow.set_experiment(f"loraswap-{name}")
            self.mlflow = mlflow
            mlflow.start_run(run_name=self.dir.name)
            mlflow.log_params({k: str(v)[:500] for k, v in _flat(config).items()})

    def _write_summary(self) -> None:
        (self.dir / "run.json").write_text(json.dumps(self.summary, indent=1, default=str))

    def _scalars(self, step: int, values: dict[str, float | None]) -> None:
        clean = {k: float(v) for k, v in values.items() if isinstance(v, int | float)}
        for tag, value in clean.items():
            self.writer.add_scalar(tag, value, step)
        if self.mlflow is not None and clean:
            self.mlflow.log_metrics({k.replace("/", "_"): v for k, v in clean.items()}, step=step)

    def on_step(self, step, total, loss, lr):
        self._scalars(step, {"train/loss": loss, "train/learning_rate": lr})

    def on_eval(self, step, total, train_loss, val_loss):
        self._scalars(step, {"val/loss": val_loss})
        self.writer.flush()

    def on_end(self, metrics):
        step = int(metrics.get("steps") or 0)
        self._scalars(step, {f"eval/{k}": v for k, v in metrics.items()
                             if isinstance(v, int | float) and not isinstance(v, bool)})
        self.summary.update(status="evaluated", metrics=metrics)

    def finish(self, status: str, ref: str | None = None) -> None:
        self.summary.update(status=status, ref=ref, finished_at=time.time())

    def close(self):
        self.writer.close()
        if self.summary["status"] in ("running", "evaluated"):
            self.summary["status"] = "failed" if self.summary["status"] == "running" else "ended"
        self._write_summary()
        if self.mlflow is not None:
            self.mlflow.end_run(status="FINISHED" if self.summary.get("ref") else "FAILED")


def _flat(config: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def list_runs(runs_dir: Path) -> list[dict[str, Any]]:
    """Every tracked run under `runs_dir`, newest first."""
    found = []
    for summary in Path(runs_dir).glob(f"*/{TRACKING_DIR}/*/run.json"):
        try:
            record = json.loads(summary.read_text())
        except (OSError, ValueError):
            continue
        record["dir"] = str(summary.parent)
        found.append(record)
    return sorted(found, key=lambda r: r.get("started_at") or 0, reverse=True)
