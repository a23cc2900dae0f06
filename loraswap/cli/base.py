"""`loraswap base`: build or verify the embedded default base model."""

from __future__ import annotations

import click

from loraswap.cli.common import fail, pass_settings, print_json
from loraswap.settings import Settings
from training.taskworld import MADE_UP_STYLES

__all__ = ["command", "taskworld_command"]


@click.group("base")
def command() -> None:
    """The base model: build the embedded default, or check one."""


@command.command("build")
@click.option("--force", is_flag=True, help="Rebuild even if a base model is already there.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--steps", type=int, default=None, help="Training steps (default: the tuned value).")
@click.option("--recipe", type=click.Choice(["copy-anything", "task-world"]),
              default="copy-anything", show_default=True,
              help="copy-anything: copy of the task world's words and of fresh made-up text "
              "(letters, printable characters, JSON), and `lower`, so it copies anything and "
              "adapters learn case on it; task-world: copy of the task world's words alone "
              "(the recipe before 2026-12; docs/training.md).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_settings
def build(settings: Settings, force: bool, seed: int, steps: int | None, recipe: str,
          as_json: bool) -> None:
    """Build the embedded default base model (about 4 minutes on 2 cores), or verify it.

    If a model is already there (and --force is not given), only its copy accuracy is
    measured and printed: on 200 held-out task-world prompts and on 200 prompts of words of
    random letters (the second bar applies to the copy-anything recipe only).
    """
    from dataclasses import replace

    settings.ensure_home()  # a bad data directory is refused before seconds of imports
    from training.base_model import (
        QUALITY_BAR,
        RECIPES,
        build_base_model,
        ensure_base_model,
        read_build_info,
        verify_base_model,
    )

    target = settings.base_model_dir
    if not settings.uses_embedded_base and not (target / "config.json").exists():
        fail(f"base model directory {target} has no config.json")
    cfg = replace(RECIPES[recipe], seed=seed, **({} if steps is None else {"steps": steps}))
    if force:
        click.echo(f"building the embedded base model into {target}", err=True)
        built = build_base_model(target, cfg)
    else:
        if not (target / "config.json").exists():
            click.echo(f"building the embedded base model into {target}", err=True)
        built = ensure_base_model(target, cfg)
    if built is not None:
        result = {"path": str(target), "built": True, "copy_accuracy": built.copy_accuracy,
                  "random_copy_accuracy": built.random_copy_accuracy,
                  "parameters": built.parameters, "wall_seconds": round(built.wall_seconds, 1)}
    else:
        info = read_build_info(target) or {}
        result = {"path": str(target), "built": False, **verify_base_model(target, seed=seed),
                  "parameters": info.get("parameters")}
        mix = [tuple(m) for m in info.get("config", {}).get("mix", [])]
        recipe = "copy-anything" if len(mix) > 1 else "task-world"
    result["recipe"] = recipe
    if as_json:
        print_json(result)
    else:
        verb = "built" if result["built"] else "verified"
        click.echo(f"{verb} {result['path']}: copy accuracy {result['copy_accuracy']:.1%} on 200 "
                   f"held-out task-world prompts, {result['random_copy_accuracy']:.1%} on 200 of "
                   f"random-letter words ({recipe} recipe; bar: {QUALITY_BAR:.0%} on "
                   f"{'each' if recipe == 'copy-anything' else 'the first'})")
    checked = (("copy_accuracy", "task-world"), ("random_copy_accuracy", "random-word"))
    for key, what in checked[: 2 if recipe == "copy-anything" else 1]:
        if result[key] < QUALITY_BAR:
            fail(f"{what} copy accuracy {result[key]:.1%} is below the {QUALITY_BAR:.0%} bar")


@click.command("taskworld")
@click.argument("task")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=str), required=True,
              help="JSONL file to write (chat `messages` rows).")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="train",
              show_default=True)
@click.option("-n", "--rows", type=int, default=1500, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--style", type=click.Choice(["task", *MADE_UP_STYLES]),
              default="task", show_default=True,
              help="Texts: the task's own word-list text, or fresh words of random letters "
                   "(lower case, or `cased`: any casing), of printable characters, or small "
                   "JSON objects.")
def taskworld_command(task: str, out: str, split: str, rows: int, seed: int, style: str) -> None:
    """Write task-world examples of TASK (copy, upper, lower, reverse, persona, title, lookup)
    as JSONL."""
    from pathlib import Path

    from training.taskworld import TASKS, make_examples, write_jsonl

    if task not in TASKS:
        fail(f"unknown task {task!r}; known: {', '.join(sorted(TASKS))}")
    examples = make_examples(task, split, rows, seed, style=None if style == "task" else style)
    count = write_jsonl(examples, Path(out))
    click.echo(f"wrote {count} {split} rows of {task!r} to {out}")
