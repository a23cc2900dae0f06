"""`loraswap demo`: the train → A/B → feedback → retrain loop on the embedded default."""

from __future__ import annotations

import click

from loraswap.cli.common import pass_settings
from loraswap.settings import Settings

__all__ = ["command"]


@click.command("demo")
@click.option("--task", default="upper", show_default=True, help="Task-world task to learn.")
@click.option("--users", type=int, default=60, show_default=True)
@click.option("--requests-per-user", type=int, default=3, show_default=True)
@pass_settings
def command(settings: Settings, task: str, users: int, requests_per_user: int) -> None:
    """Train v1 and v2 of one task, A/B them with simulated users, retrain v3 from feedback.

    Takes about 6 minutes on 2 cores (three short trainings and one server start). Uses the
    data directory's registry: the versions it makes stay registered as `demo-<task>@N`.
    """
    from loraswap.demo import DemoConfig, run_demo

    run_demo(settings, DemoConfig(task=task, name=f"demo-{task}", alias=f"demo-{task}-ab",
                                  users=users, requests_per_user=requests_per_user))
