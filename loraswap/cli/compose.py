"""`loraswap adapters merge` and `loraswap export`: composing adapters, and merging one into
its base as a standalone model (training/merge.py, training/export.py)."""

from __future__ import annotations

from pathlib import Path

import click

from loraswap.cli.common import exit_on, fail, pass_settings, print_json, ref_weight
from loraswap.settings import Settings
from loraswap.wiring import open_registry

__all__ = ["export_command", "merge_command"]


def _known(exc: BaseException) -> tuple[str, int] | None:
    from adapters import RegistryError
    from training.export import ExportRefused
    from training.merge import MergeRefused

    if isinstance(exc, MergeRefused | RegistryError | ExportRefused):
        return f"{exc}\nthe registry is unchanged", 1
    return None


_errors = exit_on(_known)


def _parent(text: str) -> tuple[str, float]:
    return ref_weight(text, float, "upper@1=0.6")


@click.command("merge")
@click.argument("name")
@click.option("--from", "parents", multiple=True, required=True, metavar="REF=WEIGHT",
              help="A parent version and its weight (repeat: at most max_merge_parents).")
@click.option("--method", default="linear", show_default=True,
              type=click.Choice(["linear", "cat", "ties", "dare_linear", "dare_ties", "svd"]))
@click.option("--density", type=float, help="TIES/DARE: the share of each delta kept (0, 1].")
@click.option("--majority-sign", type=click.Choice(["total", "frequency"]), default="total",
              show_default=True, help="TIES/DARE-TIES: how the sign of each weight is elected.")
@click.option("--svd-rank", type=int, help="SVD: the result's rank (default: the largest "
              "parent's).")
@click.option("--seed", type=int, default=0, show_default=True, help="DARE's random drops.")
@click.option("--evaluate", type=int, default=200, show_default=True,
              help="Held-out prompts per parent task-world task to score the merge and each "
              "parent on (0: none).")
@click.option("--description", default="")
@click.option("--json", "as_json", is_flag=True)
@pass_settings
@_errors
def merge_command(settings: Settings, name: str, parents: tuple[str, ...], method: str,
                  density: float | None, majority_sign: str, svd_rank: int | None, seed: int,
                  evaluate: int, description: str, as_json: bool) -> None:
    """Merge registered versions into the next version of NAME (peft's weighted merging)."""
    from training.merge import MergeSpec, merge_into_registry

    spec = MergeSpec(tuple(_parent(p) for p in parents), method, density, majority_sign,
                     svd_rank, seed)
    with open_registry(settings) as reg:
        v = merge_into_registry(reg, name, spec, max_parents=settings.max_merge_parents,
                                evaluate=evaluate, description=description)
    if as_json:
        print_json(v.as_dict())
        return
    click.echo(f"registered {v.ref} (rank {v.rank}, {method})")
    for key, value in v.metrics.items():
        click.echo(f"  {key}: {value}")


@click.command("export")
@click.argument("ref")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="The model directory to write.")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]),
              default="float32", show_default=True)
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
@click.option("--json", "as_json", is_flag=True)
@pass_settings
@_errors
def export_command(settings: Settings, ref: str, out: Path, dtype: str, force: bool,
                   as_json: bool) -> None:
    """Merge REF into the base and save a standalone Hugging Face model directory."""
    from training.export import export_merged

    with open_registry(settings) as reg:
        version = reg.get(ref, verify=True)
        if not settings.base_model_dir.exists():
            fail(f"no base model at {settings.base_model_dir}")
        record = export_merged(settings.base_model_dir, version, out, dtype=dtype, force=force)
    if as_json:
        print_json(record)
    else:
        click.echo(f"exported {version.ref} merged into the base -> {out} ({dtype}); serve it "
                   f"with `loraswap serve --base-model {out}`")
