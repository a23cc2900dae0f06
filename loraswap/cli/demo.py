"""`loraswap demo`: the train → A/B → feedback → retrain loop on the embedded default."""

from __future__ import annotations

import click

from loraswap.cli.common import pass_settings
from loraswap.settings import Settings

__all__ = ["command"]


@click.command("demo")
@click.option("--task", default="upper", show_default=True, help="Task-world task to learn.")
@click.option("--style", type=click.Choice(["task", "letters", "printable"]), default="task",
              show_default=True, help="The prompts' text: the task world's word list, or "
              "made-up words.")
@click.option("--users", type=int, default=60, show_default=True)
@click.option("--requests-per-user", type=int, default=4, show_default=True)
@pass_settings
def command(settings: Settings, task: str, style: str, users: int,
            requests_per_user: int) -> None:
    """Train v1 and v2 of one task, A/B them with simulated users, retrain v3 from feedback,
    then DPO and KTO steps from it; every version scored on the same held-out prompts.

    Takes about 10 minutes on 2 cores (five short trainings and one server start). Uses the
    data directory's registry: the versions it makes stay registered as `demo-<task>@N`.
    """
    from loraswap.demo import DemoConfig, run_demo

    run_demo(settings, DemoConfig(task=task, style=None if style == "task" else style,
                                  name=f"demo-{task}", alias=f"demo-{task}-ab", users=users,
                                  requests_per_user=requests_per_user))
