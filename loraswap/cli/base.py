"""`loraswap base`: build or verify the embedded default base model."""

from __future__ import annotations

import click

from loraswap.cli.common import fail, pass_settings, print_json
from loraswap.settings import Settings

__all__ = ["command", "taskworld_command"]


@click.group("base")
def command() -> None:
    """The base model: build the embedded default, or check one."""


@command.command("build")
@click.option("--force", is_flag=True, help="Rebuild even if a base model is already there.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--steps", type=int, default=None, help="Training steps (default: the tuned value).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_settings
def build(settings: Settings, force: bool, seed: int, steps: int | None, as_json: bool) -> None:
    """Build the embedded default base model (about 4 minutes on 2 cores), or verify it.

    If a model is already there (and --force is not given), only its copy accuracy
    on 200 held-out prompts is measured and printed.
    """
    from training.base_model import (
        QUALITY_BAR,
        BaseBuildConfig,
        build_base_model,
        ensure_base_model,
        read_build_info,
        verify_base_model,
    )

    settings.ensure_home()
    target = settings.base_model_dir
    if not settings.uses_embedded_base and not (target / "config.json").exists():
        fail(f"base model directory {target} has no config.json")
    cfg = BaseBuildConfig(seed=seed) if steps is None else BaseBuildConfig(seed=seed, steps=steps)
    if force:
        click.echo(f"building the embedded base model into {target}", err=True)
        built = build_base_model(target, cfg)
    else:
        if not (target / "config.json").exists():
            click.echo(f"building the embedded base model into {target}", err=True)
        built = ensure_base_model(target, cfg)
    if built is not None:
        result = {"path": str(target), "built": True, "copy_accuracy": built.copy_accuracy,
                  "parameters": built.parameters, "wall_seconds": round(built.wall_seconds, 1)}
    else:
        info = read_build_info(target) or {}
        result = {"path": str(target), "built": False,
                  "copy_accuracy": verify_base_model(target, seed=seed),
                  "parameters": info.get("parameters")}
    if as_json:
        print_json(result)
    else:
        verb = "built" if result["built"] else "verified"
        click.echo(f"{verb} {result['path']}: copy accuracy {result['copy_accuracy']:.1%} "
                   f"on 200 held-out prompts (bar: {QUALITY_BAR:.0%})")
    if result["copy_accuracy"] < QUALITY_BAR:
        fail(f"copy accuracy {result['copy_accuracy']:.1%} is below the {QUALITY_BAR:.0%} bar")


@click.command("taskworld")
@click.argument("task")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=str), required=True,
              help="JSONL file to write (chat `messages` rows).")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="train",
              show_default=True)
@click.option("-n", "--rows", type=int, default=1500, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def taskworld_command(task: str, out: str, split: str, rows: int, seed: int) -> None:
    """Write task-world examples of TASK (copy, upper, reverse, persona, title) as JSONL."""
    from pathlib import Path

    from training.taskworld import TASKS, make_examples, write_jsonl

    if task not in TASKS:
        fail(f"unknown task {task!r}; known: {', '.join(sorted(TASKS))}")
    count = write_jsonl(make_examples(task, split, rows, seed), Path(out))
    click.echo(f"wrote {count} {split} rows of {task!r} to {out}")
