"""The SFT loop: plain torch over a peft model, validation-loss early stopping, resumable.

Why a plain loop instead of transformers' Trainer: on two CPU cores the model is
tiny and the Trainer's overhead (accelerate, datasets, callbacks) is a large
share of the run; a loop also makes the seed, the checkpoint and the "best
version" rule easy to see. Determinism: the batch order of epoch e is a pure
function of (seed, e), so a resumed run sees the same batches as an unbroken one.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from training.data import Row
from training.encoding import collate, encode_row
from training.evaluation import loss_and_perplexity
from training.hooks import LoopHooks
from training.schedule import warmup_cosine

__all__ = ["LoopOptions", "LoopResult", "lora_state", "run_sft_loop"]

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class LoopOptions:
    lr: float = 2e-3
    epochs: int = 4
    batch_size: int = 32
    warmup_ratio: float = 0.05
    """Share of the steps spent warming the learning rate up (then cosine decay)."""
    weight_decay: float = 0.0
    seed: int = 0
    # Evaluate validation loss every this many steps (0: about 4 times per epoch).
    eval_every: int = 0
    # Stop after this many evaluations without a better validation loss (0: never).
    patience: int = 3
    progress: bool = True


@dataclass
class LoopResult:
    steps: int
    best_step: int
    best_val_loss: float | None
    stopped_early: bool
    train_loss: float
    seconds: float
    history: list[dict] = field(default_factory=list)
    tokens: int = 0  # tokens trained on (padding excluded), every epoch counted


def lora_state(model) -> dict[str, torch.Tensor]:
    """A detached copy of the trainable (adapter) weights."""
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


def _load_state(model, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in state.items():
            params[k].copy_(v)


def run_sft_loop(model, tokenizer, train: Sequence[Row], val: Sequence[Row], opts: LoopOptions,
                 *, run_dir: Path | None = None, device: str = "cpu",
                 hooks: LoopHooks | None = None) -> LoopResult:
    """Train the adapter weights in place; on return they hold the best validation checkpoint."""
    from tqdm import tqdm

    started = time.monotonic()
    torch.manual_seed(opts.seed)
    encoded = [encode_row(tokenizer, r) for r in train]
    per_epoch = math.ceil(len(encoded) / opts.batch_size)
    total = per_epoch * opts.epochs
    warmup = max(1, int(total * opts.warmup_ratio))
    eval_every = opts.eval_every or max(1, per_epoch // 4)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=opts.lr, betas=(0.9, 0.98), weight_decay=opts.weight_decay)

    hooks = hooks or LoopHooks()
    state = {"step": 0, "best_val": None, "best_step": 0, "bad_evals": 0, "history": [],
             "ema": None, "tokens": 0}
    best = lora_state(model)
    ckpt = run_dir / CHECKPOINT if run_dir else None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
    if ckpt is not None and ckpt.exists():
        saved = torch.load(ckpt, weights_only=False)
        _load_state(model, saved["current"])
        optim.load_state_dict(saved["optim"])
        torch.set_rng_state(saved["torch_rng"])
        best = saved["best"]
        state = saved["state"]

    def order(epoch: int) -> list[int]:
        idx = list(range(len(encoded)))
        random.Random(f"{opts.seed}:epoch:{epoch}").shuffle(idx)
        return idx

    model.train()
    bar = tqdm(total=total, initial=state["step"], desc="training", unit="step",
               disable=not opts.progress)
    stopped_early = False
    cached_epoch, cached_order = -1, []
    while state["step"] < total:
        step = state["step"]
        epoch, pos = divmod(step, per_epoch)
        if epoch != cached_epoch:
            cached_epoch, cached_order = epoch, order(epoch)
        picks = cached_order[pos * opts.batch_size : (pos + 1) * opts.batch_size]
        ids, labels, mask = collate([encoded[i] for i in picks], tokenizer.pad_token_id)
        lr = warmup_cosine(step, total, warmup, opts.lr)
        for group in optim.param_groups:
            group["lr"] = lr
        loss = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                     labels=labels.to(device)).loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        value = loss.item()
        state["ema"] = value if state["ema"] is None else 0.9 * state["ema"] + 0.1 * value
        state["step"] = step + 1
        state["tokens"] = state.get("tokens", 0) + int(mask.sum())
        hooks.on_step(state["step"], total, value, lr)
        bar.update(1)
        bar.set_postfix(loss=f"{state['ema']:.4f}", epoch=epoch + 1)
        if state["step"] % eval_every == 0 or state["step"] == total:
            val_loss = loss_and_perplexity(model, tokenizer, val, device=device).get("loss")
            model.train()
            state["history"].append({"step": state["step"], "train_loss": round(state["ema"], 6),
                                     "val_loss": val_loss})
            if val_loss is None or state["best_val"] is None or val_loss < state["best_val"]:
                state["best_val"], state["best_step"], state["bad_evals"] = val_loss, state["step"], 0
                best = lora_state(model)
            else:
                state["bad_evals"] += 1
            bar.set_postfix(loss=f"{state['ema']:.4f}", val=f"{val_loss:.4f}" if val_loss else "-",
                            best=f"{state['best_val']:.4f}" if state["best_val"] else "-")
            if ckpt is not None:
                tmp = ckpt.with_suffix(".tmp")
                torch.save({"current": lora_state(model), "optim": optim.state_dict(),
                            "torch_rng": torch.get_rng_state(), "best": best, "state": state}, tmp)
                tmp.replace(ckpt)
                (run_dir / "history.json").write_text(json.dumps(state["history"], indent=1))
            hooks.on_eval(state["step"], total, round(state["ema"], 6), val_loss)
            if opts.patience and state["bad_evals"] >= opts.patience:
                stopped_early = True
                break
    bar.close()
    _load_state(model, best)
    return LoopResult(steps=state["step"], best_step=state["best_step"],
                      best_val_loss=state["best_val"], stopped_early=stopped_early,
                      train_loss=round(state["ema"] or 0.0, 6),
                      seconds=round(time.monotonic() - started, 2), history=state["history"],
                      tokens=state.get("tokens", 0))
