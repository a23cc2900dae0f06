"""`loraswap train`: SFT, DPO and KTO into the adapter registry.

Exit codes: 0 registered; 1 bad data or a registry refusal; 2 an unusable option
(QLoRA without CUDA, a rank the server cannot serve); 130 interrupted (the
checkpoint is kept for `--resume`). Nothing is registered unless training and
evaluation both finished.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from loraswap.cli.common import exit_on, fail, pass_settings, print_json
from loraswap.settings import Settings
from loraswap.wiring import open_registry

__all__ = ["command"]


@click.group("train")
def command() -> None:
    """Train LoRA adapters (SFT, DPO, KTO) and register them as new versions."""


def _base_dir(settings: Settings, base: str) -> Path:
    return settings.base_model_dir if base == "default" else Path(base).expanduser()


def _known(exc: BaseException) -> tuple[str, int] | None:
    """Each known failure is one `error:` paragraph and a distinct exit status."""
    from adapters import RegistryError
    from training.data import DataError
    from training.lora import TrainingConfigError

    if isinstance(exc, DataError | RegistryError):
        return f"{exc}\nnothing was registered", 1
    if isinstance(exc, TrainingConfigError):
        return str(exc), 2
    if isinstance(exc, KeyboardInterrupt):
        return ("interrupted: nothing was registered; the last checkpoint is kept "
                "(run the same command with --resume to continue)", 130)
    return None


_errors = exit_on(_known)


def _lora_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--rank", type=int, default=16, show_default=True, help="LoRA rank r."),
        click.option("--alpha", type=float, default=32.0, show_default=True, help="LoRA alpha."),
        click.option("--dropout", type=float, default=0.0, show_default=True),
        click.option("--targets", default="all-linear", show_default=True,
                     help="Comma-separated module names, or all-linear (output head excluded)."),
        click.option("--rslora", is_flag=True, help="Rank-stabilised scaling (alpha/sqrt(r))."),
        click.option("--qlora", is_flag=True,
                     help="4-bit nf4 base with double quantisation, bf16 compute (CUDA only)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _common_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--base", default="default", show_default=True,
                     help="Base model directory, or `default` for the configured one."),
        click.option("--data", "data", type=click.Path(path_type=Path), required=True,
                     help="Training JSONL."),
        click.option("--val", type=click.Path(path_type=Path), default=None,
                     help="Validation JSONL (default: split from --data)."),
        click.option("--test", type=click.Path(path_type=Path), default=None,
                     help="Test JSONL (default: split from --data)."),
        click.option("--max-length", type=int, default=512, show_default=True,
                     help="Rows longer than this many tokens are dropped (and reported)."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--task", default=None,
                     help="Task-world task for exact match (default: inferred from `<task>:` prompts)."),
        click.option("--evaluator", default=None,
                     help="module:function(output, reference) -> bool|score for exact match."),
        click.option("--drop-invalid", is_flag=True,
                     help="Drop invalid rows (and report them) instead of refusing the file."),
        click.option("--allow-overlap", is_flag=True,
                     help="Train although test prompts also appear in training (recorded)."),
        click.option("--description", default="", help="Stored with the version."),
        click.option("--tag", "tags", multiple=True, help="Tag for the version (repeatable)."),
        click.option("--no-progress", is_flag=True, help="No progress bar."),
        click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _lora(rank, alpha, dropout, targets, rslora, qlora):
    from training.lora import LoraOptions

    names = tuple(t.strip() for t in targets.split(",") if t.strip())
    return LoraOptions(rank=rank, alpha=alpha, dropout=dropout, targets=names, rslora=rslora,
                       qlora=qlora)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{value:.1%}"


def _report(result, as_json: bool) -> None:
    if as_json:
        print_json(result.as_dict())
        return
    m = result.metrics
    click.echo(f"registered {result.ref} ({m.get('method')}, {m.get('wall_seconds')} s)")
    if "exact_match" in m:
        other = next((k for k in ("base_exact_match", "parent_exact_match") if k in m), None)
        ref = f" ({other.split('_')[0]} {_pct(m[other])})" if other else ""
        click.echo(f"  exact match {_pct(m['exact_match'])} on {m.get('exact_match_total')} "
                   f"held-out rows{ref}")
    if "copy_accuracy" in m:
        click.echo(f"  forgetting: copy {_pct(m['copy_accuracy'])} with the adapter "
                   f"(base {_pct(m.get('base_copy_accuracy'))})")
    if "preference_accuracy" in m:
        click.echo(f"  preference accuracy {_pct(m['preference_accuracy'])} "
                   f"(before {_pct(m.get('parent_preference_accuracy', m.get('base_preference_accuracy')))}); "
                   f"trl rewards/accuracies {m.get('trl_preference_accuracy_before')} -> "
                   f"{m.get('trl_preference_accuracy')}")
    for key in ("val_loss", "val_perplexity", "test_loss", "test_perplexity"):
        if key in m:
            click.echo(f"  {key} {m[key]:.4f}")


@command.command("sft")
@_common_options
@click.option("--name", required=True, help="Adapter name; the version is the next number.")
@click.option("--from", "parent", default=None, help="Continue training this version (NAME@N).")
@_lora_options
@click.option("--lr", type=float, default=2e-3, show_default=True,
              help="Peak learning rate (warm-up, cosine decay). Tuned for the tiny embedded base.")
@click.option("--epochs", type=int, default=4, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--warmup-ratio", type=float, default=0.05, show_default=True)
@click.option("--eval-every", type=int, default=0,
              help="Validation loss every N steps (default: 4 times per epoch).")
@click.option("--patience", type=int, default=3, show_default=True,
              help="Stop after this many evaluations without a better validation loss (0: never).")
@click.option("--replay-copy", type=float, default=0.0, show_default=True,
              help="Task-world data: this share of the training mix is `copy` rows (keeps copy).")
@click.option("--general", type=click.Path(path_type=Path), default=None,
              help="User data: a general JSONL whose loss measures forgetting.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run of the same name.")
@pass_settings
@_errors
def sft(settings: Settings, base, data, val, test, max_length, seed, task, evaluator,
        drop_invalid, allow_overlap, description, tags, no_progress, as_json, name, parent, rank,
        alpha, dropout, targets, rslora, qlora, lr, epochs, batch_size, warmup_ratio, eval_every, patience,
        replay_copy, general, resume) -> None:
    """Supervised fine-tuning on chat `messages`, `prompt`/`completion` or `text` rows."""
    from training.api import SFTConfig, train_sft
    from training.lora import check_qlora
    from training.sft import LoopOptions

    lora = _lora(rank, alpha, dropout, targets, rslora, qlora)
    lora.check(settings.max_lora_rank)
    check_qlora(lora)
    cfg = SFTConfig(
        data=data, name=name, base=_base_dir(settings, base), val=val, test=test, lora=lora,
        loop=LoopOptions(lr=lr, epochs=epochs, batch_size=batch_size, warmup_ratio=warmup_ratio,
                         seed=seed, eval_every=eval_every, patience=patience,
                         progress=not no_progress),
        max_length=max_length, replay_copy=replay_copy, task=task, evaluator=evaluator,
        general=general, strict=not drop_invalid, allow_overlap=allow_overlap, parent=parent,
        description=description, tags=tuple(tags))
    with open_registry(settings) as reg:
        result = train_sft(cfg, reg, runs_dir=settings.home / "runs", resume=resume,
                           max_rank=settings.max_lora_rank)
    _report(result, as_json)


def _preference(method: str):
    @command.command(method)
    @_common_options
    @click.option("--name", default=None,
                  help="Adapter name (default: the --from adapter's name, as its next version).")
    @click.option("--from", "parent", default=None,
                  help="Start from this registered version (NAME or NAME@N); default: the base.")
    @_lora_options
    @click.option("--lr", type=float, default=5e-5, show_default=True)
    @click.option("--epochs", type=int, default=1, show_default=True)
    @click.option("--batch-size", type=int, default=16, show_default=True)
    @click.option("--beta", type=float, default=0.1, show_default=True)
    @pass_settings
    @_errors
    def run(settings: Settings, base, data, val, test, max_length, seed, task, evaluator,
            drop_invalid, allow_overlap, description, tags, no_progress, as_json, name, parent,
            rank, alpha, dropout, targets, rslora, qlora, lr, epochs, batch_size, beta) -> None:
        from training.lora import check_qlora
        from training.preference import PreferenceConfig, train_preference

        lora = _lora(rank, alpha, dropout, targets, rslora, qlora)
        lora.check(settings.max_lora_rank)
        check_qlora(lora)
        if name is None:
            if parent is None:
                fail("--name is needed when training from the base (no --from)", code=2)
            name = parent.split("@", 1)[0]
        cfg = PreferenceConfig(
            method=method, data=data, name=name, base=_base_dir(settings, base), parent=parent,
            val=val, test=test, lora=lora, lr=lr, epochs=epochs, batch_size=batch_size,
            beta=beta, max_length=max_length, seed=seed, task=task, evaluator=evaluator,
            strict=not drop_invalid, allow_overlap=allow_overlap, description=description,
            tags=tuple(tags), progress=not no_progress)
        with open_registry(settings) as reg:
            result = train_preference(cfg, reg, runs_dir=settings.home / "runs",
                                      max_rank=settings.max_lora_rank)
        _report(result, as_json)

    run.__doc__ = {
        "dpo": "Direct preference optimisation on `prompt`/`chosen`/`rejected` rows (trl).",
        "kto": "KTO on `prompt`/`completion`/`label` rows (trl).",
    }[method]
    run.help = run.__doc__
    return run


dpo = _preference("dpo")
kto = _preference("kto")
