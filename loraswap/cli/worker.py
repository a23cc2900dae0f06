"""`loraswap worker` runs fine-tuning jobs; `loraswap runs` lists tracked training runs.

`loraswap serve` starts a worker itself (setting `finetune_worker`); run one by hand to train
on another process or machine that shares the data directory, or with the server's worker
off. Every training run, from `loraswap train` or a job, is tracked under `<home>/runs`:

    tensorboard --logdir ~/.local/share/loraswap/runs
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from datetime import datetime

import click

from loraswap.cli.common import fail, pass_settings, print_json, print_table
from loraswap.settings import Settings

__all__ = ["command", "runs_command"]


@click.command("worker")
@click.option("--once", is_flag=True, help="Run the queued jobs, then exit.")
@click.option("--poll", type=float, default=1.0, show_default=True,
              help="Seconds between looks at the queue.")
@click.option("--parent-pid", type=int, hidden=True, help="Exit when this process is gone.")
@pass_settings
def command(settings: Settings, once: bool, poll: float, parent_pid: int | None) -> None:
    """Run fine-tuning jobs from the queue, one at a time, until SIGTERM."""
    from loraswap.finetune_worker import Worker

    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker = Worker(settings)
    try:
        ran = worker.run(stop, poll_s=poll, once=once, parent_pid=parent_pid)
    finally:
        worker.close()
    click.echo(f"worker stopped after {ran} job(s)", err=True)


@click.group("runs")
def runs_command() -> None:
    """Tracked training runs (TensorBoard event files under <home>/runs)."""


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


@runs_command.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_settings
def list_runs_cmd(settings: Settings, as_json: bool) -> None:
    """Every tracked run, newest first."""
    from training.tracking import list_runs

    found = list_runs(settings.runs_dir)
    if as_json:
        print_json([{k: v for k, v in r.items() if k != "config"} for r in found])
        return
    print_table(["run", "name", "method", "status", "version", "started"],
                [[r["run_id"], r["name"], r["method"], r["status"], r.get("ref") or "-",
                  _when(r.get("started_at"))] for r in found])
    click.echo(f"\ntensorboard --logdir {settings.runs_dir}")


@runs_command.command("show")
@click.argument("run_id")
@pass_settings
def show_run(settings: Settings, run_id: str) -> None:
    """One run: its configuration, final metrics and where its event files are."""
    from training.tracking import list_runs

    found = [r for r in list_runs(settings.runs_dir) if r["run_id"] == run_id]
    if not found:
        fail(f"no tracked run {run_id!r} under {settings.runs_dir} (see `loraswap runs list`)")
    click.echo(json.dumps(found[0], indent=1, default=str))
