"""DPO and KTO with trl, from a registered adapter version (continued) or from the base.

Why start from a version: preference data usually refines an SFT adapter. trl
copies the starting adapter into a frozen "ref" adapter, so the reference policy
is the parent version, not the bare base; only the trained "default" adapter is
saved and registered. The parent's exact match on the same test rows is measured
before training, so "what did DPO cost" is one subtraction in the metrics.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from training import runs
from training.api import evaluate_adapter, too_long_check
from training.data import Row
from training.evaluation import detect_task, exact_match, preference_scores
from training.hooks import HookList, LoopHooks, trl_callback
from training.lora import LoraOptions, TrainingConfigError
from training.tracking import Tracker

__all__ = ["PreferenceConfig", "train_preference"]

METHODS = ("dpo", "kto")


@dataclass(frozen=True)
class PreferenceConfig:
    method: str
    data: Path
    name: str
    base: Path
    parent: str | None = None       # registered version to continue; None: a new adapter
    val: Path | None = None
    test: Path | None = None
    lora: LoraOptions = field(default_factory=LoraOptions)  # only when starting from the base
    lr: float = 5e-5
    epochs: int = 1
    batch_size: int = 16
    beta: float = 0.1
    """How far the policy may move from the reference (TRL's DPO/KTO beta)."""
    max_length: int = 512
    seed: int = 0
    task: str | None = None
    evaluator: str | None = None
    strict: bool = True
    allow_overlap: bool = False
    description: str = ""
    tags: tuple[str, ...] = ()
    device: str = "auto"
    eval_limit: int = 500
    copy_eval: int = 200
    progress: bool = True

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("progress")
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


def _too_long(tokenizer, max_length: int):
    check = too_long_check(tokenizer, max_length)

    def too_long(row: Row) -> bool:
        replies = [row.data["completion"]] if "completion" in row.data else [
            row.data["chosen"], row.data["rejected"]]
        return any(check(Row("sft", {"messages": row.data["prompt"] + r})) for r in replies)
    return too_long


def _trl_metrics(metrics: dict[str, float]) -> dict[str, float]:
    keep = ("eval_loss", "eval_rewards/accuracies", "eval_rewards/margins", "eval_rewards/chosen",
            "eval_rewards/rejected", "eval_kl", "eval_logps/chosen", "eval_logps/rejected")
    return {k.removeprefix("eval_"): round(float(v), 6) for k, v in metrics.items() if k in keep}


def train_preference(cfg: PreferenceConfig, registry=None, *, runs_dir: Path,
                     output_dir: Path | None = None, max_rank: int = 64,
                     hooks: LoopHooks | None = None, run_id: str | None = None,
                     mlflow_uri: str | None = None,
                     lineage: dict | None = None) -> runs.TrainResult:
    """DPO (`prompt`/`chosen`/`rejected`) or KTO (`prompt`/`completion`/`label`) into a
    version; tracked and hooked like `train_sft`."""
    from transformers import AutoTokenizer

    if cfg.method not in METHODS:
        raise TrainingConfigError(f"method {cfg.method!r}: use one of {', '.join(METHODS)}")
    started = time.monotonic()
    if cfg.method == "kto" and cfg.batch_size < 2:
        raise TrainingConfigError("--batch-size: KTO needs at least 2 (its KL term mixes a batch)")
    start = runs.check_start(registry, cfg.lora, cfg.base, cfg.parent, max_rank=max_rank)

    tokenizer = AutoTokenizer.from_pretrained(str(cfg.base))
    splits = runs.load_splits(cfg.data, cfg.method, val=cfg.val, test=cfg.test, seed=cfg.seed,
                              strict=cfg.strict, too_long=_too_long(tokenizer, cfg.max_length),
                              allow_overlap=cfg.allow_overlap)
    if cfg.method == "kto":
        labels = {r.data["label"] for r in splits.train}
        if labels != {True, False}:
            raise TrainingConfigError(
                "KTO data needs both desirable (label true) and undesirable (label false) rows; "
                f"the training split has only label={labels.pop()}")
    task = cfg.task or detect_task(splits.train + splits.val + splits.test)
    config = {**cfg.as_dict(), "task": task}

    with runs.RunDir(runs_dir / cfg.name, config) as run:
        tracker = Tracker(runs_dir, cfg.name, cfg.method, config, run_id=run_id,
                          mlflow_uri=mlflow_uri)
        every = HookList([tracker, *([hooks] if hooks else [])])
        try:
            result = _run(cfg, registry, run, start, splits, task, config, every, started,
                          output_dir, lineage or {})
            tracker.finish("succeeded", result.ref)
        finally:
            every.close()
        return result


def _run(cfg: PreferenceConfig, registry, run, start, splits, task, config, every: HookList,
         started: float, output_dir: Path | None, lineage: dict) -> runs.TrainResult:
    from datasets import Dataset as HFDataset

    loaded, model = runs.start_adapter(start, cfg.base, cfg.lora, device=cfg.device,
                                       seed=cfg.seed)
    tok, device = loaded.tokenizer, loaded.device

    before: dict[str, Any] = {}
    em = exact_match(model, tok, splits.test, task=task, device=device, limit=cfg.eval_limit)
    if em is not None:
        before["exact_match"] = round(em["accuracy"], 4)
    if cfg.method == "dpo":
        scores = preference_scores(model, tok, splits.test, device=device) or {}
        before["preference_accuracy"] = scores.get("accuracy")
        before["preference_margin"] = scores.get("margin")

    trainer = _trainer(cfg, model, tok, run.path, HFDataset, splits, loaded.quantized)
    # Its log lines go to stdout, where `--json` output must stand alone.
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(trl_callback(every))
    before.update(_trl_metrics(trainer.evaluate()))
    trainer.train()
    after = _trl_metrics(trainer.evaluate())
    model = trainer.model
    model.set_adapter("default")

    metrics: dict[str, Any] = {"method": cfg.method, "task": task}
    metrics.update(evaluate_adapter(
        model, tok, splits, task=task, evaluator=cfg.evaluator, general=None, device=device,
        eval_limit=cfg.eval_limit, copy_eval=cfg.copy_eval, seed=cfg.seed, compare="none"))
    start_label = "parent" if start.parent else "base"
    if "exact_match" in before:
        metrics[f"{start_label}_exact_match"] = before["exact_match"]
    if cfg.method == "dpo":
        scores = preference_scores(model, tok, splits.test, device=device) or {}
        for name in ("accuracy", "margin"):
            metrics[f"preference_{name}"] = scores.get(name)
            metrics[f"{start_label}_preference_{name}"] = before[f"preference_{name}"]
    metrics["trl_before"] = {k: v for k, v in before.items()
                             if k not in ("exact_match", "preference_accuracy",
                                          "preference_margin")}
    metrics["trl_after"] = after
    if "rewards/accuracies" in after:
        metrics["trl_preference_accuracy"] = after["rewards/accuracies"]
        metrics["trl_preference_accuracy_before"] = before.get("rewards/accuracies")
    losses = [h["train_loss"] for h in trainer.state.log_history if "train_loss" in h]
    metrics["train_loss"] = round(float(losses[-1]), 6) if losses else None
    metrics["steps"] = trainer.state.global_step
    metrics["trained_tokens"] = int(trainer.state.num_input_tokens_seen or 0) or None
    metrics["wall_seconds"] = runs.elapsed(started)
    every.on_end(metrics)

    return runs.register_run(registry, run, model, name=cfg.name, method=cfg.method,
                             start=start, loaded=loaded, splits=splits, config=config,
                             metrics=metrics, lineage=lineage,
                             description=cfg.description, tags=cfg.tags,
                             output_dir=output_dir)


def _trainer(cfg: PreferenceConfig, model, tokenizer, run_path: Path, hf_dataset, splits,
             quantized: bool):
    common = dict(
        output_dir=str(run_path / "trl"), per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size, learning_rate=cfg.lr,
        num_train_epochs=cfg.epochs, beta=cfg.beta, max_length=cfg.max_length,
        logging_steps=10, save_strategy="no", eval_strategy="no", report_to="none",
        seed=cfg.seed, use_cpu=loaded_on_cpu(model), bf16=quantized,
        disable_tqdm=not cfg.progress, dataloader_num_workers=0, lr_scheduler_type="cosine",
        warmup_steps=0,
    )
    train_rows = [r.data for r in splits.train]
    # KTO reads batches in order (its KL term pairs neighbours): shuffle once, seeded.
    random.Random(f"{cfg.seed}:pref").shuffle(train_rows)
    eval_rows = [r.data for r in (splits.val or splits.test)]
    if cfg.method == "dpo":
        from trl import DPOConfig, DPOTrainer

        return DPOTrainer(model=model, ref_model=None, args=DPOConfig(**common),
                          train_dataset=hf_dataset.from_list(train_rows),
                          eval_dataset=hf_dataset.from_list(eval_rows),
                          processing_class=tokenizer)
    from trl import KTOConfig, KTOTrainer

    return KTOTrainer(model=model, ref_model=None, args=KTOConfig(**common),
                      train_dataset=hf_dataset.from_list(train_rows),
                      eval_dataset=hf_dataset.from_list(eval_rows), processing_class=tokenizer)


def loaded_on_cpu(model) -> bool:
    return next(model.parameters()).device.type == "cpu"
