"""`loraswap feedback`: turn collected feedback into training data."""

from __future__ import annotations

import click

from loraswap.cli.common import fail, pass_settings, router_session
from loraswap.settings import Settings

__all__ = ["command"]


@click.group("feedback")
def command() -> None:
    """Feedback collected through POST /v1/feedback."""


@command.command("export")
@click.option("--experiment", default=None, help="Only this experiment's requests.")
@click.option("--adapter", default=None, help="Only requests served by this adapter "
              "(name for every version, or name@version).")
@click.option("--format", "fmt", type=click.Choice(["sft", "dpo", "kto"]), required=True)
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True)
@pass_settings
def export(settings: Settings, experiment: str | None, adapter: str | None, fmt: str,
           out: str) -> None:
    """Write SFT, DPO or KTO rows (TRL conversational JSONL) for `loraswap train`.

    Needs retention: only requests whose prompt and output were kept can be exported.
    """
    from pathlib import Path

    from common.jsonl import write_jsonl
    from router import RouterError

    if experiment and adapter:
        fail("give --experiment or --adapter, not both", code=2)
    try:
        with router_session(settings, with_registry=False) as router:
            result = router.export(fmt, experiment=experiment, adapter=adapter)
    except RouterError as exc:
        fail(exc.message)
    if not result.rows:
        fail(result.explain_empty())
    write_jsonl(result.rows, Path(out))
    extra = f"; skipped: {result.skipped}" if result.skipped else ""
    if result.without_retention:
        extra += f"; {result.without_retention} judged requests had no retention"
    click.echo(f"wrote {len(result.rows)} {fmt} rows to {out} "
               f"(from {result.feedback} feedback records{extra})")
