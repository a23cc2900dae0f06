"""The Python API for SFT: what `loraswap train sft` and the router's retraining loop call.

`train_sft(SFTConfig(...), registry=Registry(...))` validates the data, trains a
LoRA adapter (or continues a registered one), evaluates it, and registers it as
the next version of `name` with its metrics and lineage, or raises and registers
nothing.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from training.data import Row
from training.encoding import encode_row
from training.evaluation import (
    detect_task,
    exact_match,
    forgetting_copy,
    load_evaluator,
    loss_and_perplexity,
)
from training.hooks import HookList, LoopHooks
from training.lora import LoraOptions, TrainingConfigError
from training.runs import (
    RunDir,
    TrainResult,
    check_start,
    elapsed,
    load_splits,
    register_run,
    start_adapter,
)
from training.sft import LoopOptions, run_sft_loop
from training.taskworld import TASKS, make_examples
from training.tracking import Tracker

__all__ = [
    "SFTConfig",
    "evaluate_adapter",
    "too_long_check",
    "train_sft",
]


@dataclass(frozen=True)
class SFTConfig:
    data: Path
    name: str
    base: Path
    val: Path | None = None
    test: Path | None = None
    lora: LoraOptions = field(default_factory=LoraOptions)
    loop: LoopOptions = field(default_factory=LoopOptions)
    max_length: int = 512
    # Task-world data only: this share of the training mix is `copy` rows (keeps copy alive).
    replay_copy: float = 0.0
    task: str | None = None
    evaluator: str | None = None  # "module:function" (output, reference) -> bool | score
    general: Path | None = None   # user data: forgetting = loss on this set, adapter on vs off
    strict: bool = True           # invalid rows are errors (False: dropped and reported)
    allow_overlap: bool = False   # train although test prompts are also training prompts
    parent: str | None = None     # continue training this registered version
    description: str = ""
    tags: tuple[str, ...] = ()
    device: str = "auto"
    eval_limit: int = 500
    copy_eval: int = 200

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("loop")
        d["loop"] = {k: v for k, v in asdict(self.loop).items() if k != "progress"}
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


def too_long_check(tokenizer, max_length: int):
    def check(row: Row) -> bool:
        return len(encode_row(tokenizer, row)[0]) > max_length
    return check


def evaluate_adapter(model, tokenizer, splits, *, task: str | None, evaluator: str | None,
                     general: Path | None, device: str, eval_limit: int, copy_eval: int,
                     seed: int, compare: str = "base") -> dict[str, Any]:
    """Loss/perplexity on val and test, exact match (adapter vs base), forgetting."""
    metrics: dict[str, Any] = {}
    for label, rows in (("val", splits.val), ("test", splits.test)):
        lp = loss_and_perplexity(model, tokenizer, rows, device=device)
        if lp:
            metrics[f"{label}_loss"], metrics[f"{label}_perplexity"] = lp["loss"], lp["perplexity"]
    judge = load_evaluator(evaluator) if evaluator else None
    em = exact_match(model, tokenizer, splits.test, task=task, evaluator=judge, device=device,
                     limit=eval_limit)
    if em is not None:
        metrics["exact_match"] = round(em["accuracy"], 4)
        metrics["exact_match_total"] = em["total"]
        metrics["exact_match_evaluator"] = evaluator or (f"taskworld:{task}" if task else "exact")
        if em.get("failures"):
            metrics["exact_match_failures"] = em["failures"]
        if compare == "base":
            base = exact_match(model, tokenizer, splits.test, task=task, evaluator=judge,
                               device=device, limit=eval_limit, disable_adapter=True)
            metrics["base_exact_match"] = round(base["accuracy"], 4) if base else None
    if task is not None:
        fg = forgetting_copy(model, tokenizer, n=copy_eval, seed=seed, device=device)
        metrics["copy_accuracy"] = round(fg["copy_accuracy"], 4)
        metrics["base_copy_accuracy"] = round(fg["base_copy_accuracy"], 4)
    elif general is not None:
        from training.data import load_dataset

        rows = load_dataset(general, "sft", strict=False, min_rows=1).rows[:eval_limit]
        on = loss_and_perplexity(model, tokenizer, rows, device=device)
        with model.disable_adapter():
            off = loss_and_perplexity(model, tokenizer, rows, device=device)
        metrics["general_loss"], metrics["base_general_loss"] = on["loss"], off["loss"]
    return metrics


def train_sft(cfg: SFTConfig, registry=None, *, runs_dir: Path, output_dir: Path | None = None,
              resume: bool = False, max_rank: int = 64, hooks: LoopHooks | None = None,
              run_id: str | None = None, mlflow_uri: str | None = None,
              lineage: dict | None = None) -> TrainResult:
    """Train, evaluate, register. Raises DataError / TrainingConfigError before training
    when the data or the options are unusable; registers nothing on any failure. Every run
    is tracked (training/tracking.py); `hooks` see it too (a fine-tuning job's events), and
    `lineage` adds entries to the version's lineage."""
    from transformers import AutoTokenizer

    started = time.monotonic()
    if not 0.0 <= cfg.replay_copy < 1.0:
        raise TrainingConfigError(f"--replay-copy {cfg.replay_copy}: must be in [0, 1)")
    if cfg.task is not None and cfg.task not in TASKS:
        raise TrainingConfigError(f"--task {cfg.task}: unknown; known: {', '.join(sorted(TASKS))}")
    start = check_start(registry, cfg.lora, cfg.base, cfg.parent, max_rank=max_rank)

    tokenizer = AutoTokenizer.from_pretrained(str(cfg.base))
    splits = load_splits(cfg.data, "sft", val=cfg.val, test=cfg.test, seed=cfg.loop.seed,
                         strict=cfg.strict, too_long=too_long_check(tokenizer, cfg.max_length),
                         allow_overlap=cfg.allow_overlap)
    task = cfg.task or detect_task(splits.train + splits.val + splits.test)
    train_rows = list(splits.train)
    replayed = 0
    if cfg.replay_copy:
        if task is None:
            raise TrainingConfigError(
                "--replay-copy mixes in task-world `copy` rows; it only applies to task-world data")
        replayed = round(len(train_rows) * cfg.replay_copy / (1 - cfg.replay_copy))
        train_rows += [Row("sft", {"messages": ex.messages()})
                       for ex in make_examples("copy", "train", replayed, cfg.loop.seed)]

    config = {"method": "sft", **cfg.as_dict(), "task": task, "replayed_copy_rows": replayed}
    with RunDir(runs_dir / cfg.name, config, resume=resume) as run:
        tracker = Tracker(runs_dir, cfg.name, "sft", config, run_id=run_id,
                          mlflow_uri=mlflow_uri)
        every = HookList([tracker, *([hooks] if hooks else [])])
        try:
            return _sft_run(cfg, registry, run, start, splits, task, train_rows, config, every,
                            tracker, started, output_dir, lineage or {})
        finally:
            every.close()


def _sft_run(cfg: SFTConfig, registry, run: RunDir, start, splits, task, train_rows, config,
             every: HookList, tracker: Tracker, started: float, output_dir: Path | None,
             lineage: dict) -> TrainResult:
    loaded, model = start_adapter(start, cfg.base, cfg.lora, device=cfg.device,
                                  seed=cfg.loop.seed)
    loop = run_sft_loop(model, loaded.tokenizer, train_rows, splits.val, cfg.loop,
                        run_dir=run.path, device=loaded.device, hooks=every)
    metrics = {"method": "sft", "task": task}
    metrics.update(evaluate_adapter(
        model, loaded.tokenizer, splits, task=task, evaluator=cfg.evaluator,
        general=cfg.general, device=loaded.device, eval_limit=cfg.eval_limit,
        copy_eval=cfg.copy_eval, seed=cfg.loop.seed))
    metrics.update({"train_loss": loop.train_loss, "best_val_loss": loop.best_val_loss,
                    "steps": loop.steps, "best_step": loop.best_step,
                    "stopped_early": loop.stopped_early, "train_seconds": loop.seconds,
                    "resumed": run.resumed, "trained_tokens": loop.tokens,
                    "wall_seconds": elapsed(started)})
    every.on_end(metrics)
    result = register_run(registry, run, model, name=cfg.name, method="sft", start=start,
                          loaded=loaded, splits=splits, config=config, metrics=metrics,
                          lineage={"history": loop.history[-20:], **lineage},
                          description=cfg.description, tags=cfg.tags,
                          output_dir=output_dir)
    tracker.finish("succeeded", result.ref)
    return result
