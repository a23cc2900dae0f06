"""What a training loop tells the outside while it runs: every step, every evaluation, the end.

Why hooks: the same loop serves `loraswap train` (a progress bar and TensorBoard files) and
fine-tuning jobs (events in the database, a cancel that must land within seconds). A hook
may raise from `on_step` to stop the run (a cancelled job); the run then registers nothing,
like any other failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["HookList", "LoopHooks", "trl_callback"]


class LoopHooks:
    """No-op hooks; subclasses override what they need."""

    def on_step(self, step: int, total: int, loss: float | None, lr: float | None) -> None:
        """After each optimiser step (1-based)."""

    def on_eval(self, step: int, total: int, train_loss: float | None,
                val_loss: float | None) -> None:
        """After each validation pass (the checkpoint for `step` is on disk)."""

    def on_end(self, metrics: dict[str, Any]) -> None:
        """After evaluation, before registration."""

    def close(self) -> None:
        """Always called, success or not."""


class HookList(LoopHooks):
    def __init__(self, hooks: Sequence[LoopHooks]) -> None:
        self.hooks = list(hooks)

    def on_step(self, step, total, loss, lr):
        for h in self.hooks:
            h.on_step(step, total, loss, lr)

    def on_eval(self, step, total, train_loss, val_loss):
        for h in self.hooks:
            h.on_eval(step, total, train_loss, val_loss)

    def on_end(self, metrics):
        for h in self.hooks:
            h.on_end(metrics)

    def close(self):
        for h in self.hooks:
            h.close()


def trl_callback(hooks: LoopHooks):
    """The hooks as a transformers TrainerCallback (TRL's DPO and KTO trainers)."""
    from transformers import TrainerCallback

    class _Hooks(TrainerCallback):
        def __init__(self) -> None:
            self.last_loss: float | None = None

        def on_step_end(self, args, state, control, **kw):
            hooks.on_step(state.global_step, state.max_steps, None, None)

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            if "loss" in logs:
                self.last_loss = float(logs["loss"])
                hooks.on_eval(state.global_step, state.max_steps, self.last_loss,
                              float(logs["eval_loss"]) if "eval_loss" in logs else None)
            elif "eval_loss" in logs:
                hooks.on_eval(state.global_step, state.max_steps, self.last_loss,
                              float(logs["eval_loss"]))

    return _Hooks()
