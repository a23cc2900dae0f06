"""Greedy chat generation with plain transformers (+ peft): the reference the engine must match.

Used by evaluation after training, by `loraswap base build`, and by the parity
tests that compare vLLM's outputs with these token for token.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from training.encoding import render_prompt

__all__ = ["HFChatModel", "greedy_reply_ids"]


@torch.inference_mode()
def greedy_reply_ids(model, tokenizer, conversations: Sequence[Sequence[dict[str, str]]],
                     max_new_tokens: int, batch_size: int = 64, device: str = "cpu",
                     tools: Sequence[Sequence[dict] | None] | None = None) -> list[list[int]]:
    """Greedy token ids of each conversation's reply, without the prompt, EOS or padding.

    Prompts are left-padded so every row's reply starts at the same column. `tools[i]` are
    the tools offered to conversation i, if any.
    """
    tools = list(tools) if tools is not None else [None] * len(conversations)
    tokenizer.padding_side = "left"
    # EOS only: generate() pads finished rows after their EOS, and a model may emit the pad
    # id as a token of its own (a random adapter did), which the engine serves as one.
    stop = {tokenizer.eos_token_id}
    out: list[list[int]] = []
    for start in range(0, len(conversations), batch_size):
        chunk = [render_prompt(tokenizer, c, t)
                 for c, t in zip(conversations[start : start + batch_size],
                                 tools[start : start + batch_size], strict=True)]
        enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(device)
        gen = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        for row in gen[:, enc["input_ids"].shape[1] :].tolist():
            ids = []
            for t in row:
                if t in stop:
                    break
                ids.append(t)
            out.append(ids)
    return out


class HFChatModel:
    """A base model, optionally with one LoRA adapter, answering chat prompts greedily."""

    def __init__(self, model, tokenizer) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"

    @classmethod
    def load(cls, base_dir: Path | str, adapter_dir: Path | str | None = None) -> HFChatModel:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
        model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
        if adapter_dir is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter_dir))
        return cls(model, tokenizer)

    def render(self, prompt: str) -> str:
        return render_prompt(self.tokenizer, [{"role": "user", "content": prompt}])

    def generate_ids(
        self, prompts: Sequence[str], max_new_tokens: int = 96, batch_size: int = 64
    ) -> list[list[int]]:
        """Greedy token ids of each reply to a one-turn user prompt."""
        conversations = [[{"role": "user", "content": p}] for p in prompts]
        return greedy_reply_ids(self.model, self.tokenizer, conversations, max_new_tokens,
                                batch_size)

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 96) -> list[str]:
        return [
            self.tokenizer.decode(ids, skip_special_tokens=True)
            for ids in self.generate_ids(prompts, max_new_tokens=max_new_tokens)
        ]
