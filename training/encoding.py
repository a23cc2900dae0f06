"""Rows -> token ids and labels through the base model's own chat template.

Why render incrementally: the loss must cover the assistant's tokens only (and
the end-of-turn token, or generation never stops), whatever the template looks
like. Rendering the conversation turn by turn and diffing the strings finds the
assistant spans without knowing the template's markup.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from training.data import Row

__all__ = ["IGNORE", "collate", "encode_row", "render_prompt"]

IGNORE = -100


def render_prompt(tokenizer, messages: Sequence[dict], tools: Sequence[dict] | None = None
                  ) -> str:
    return tokenizer.apply_chat_template(list(messages), tools=list(tools) if tools else None,
                                         tokenize=False, add_generation_prompt=True)


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_row(tokenizer, row: Row) -> tuple[list[int], list[int]]:
    """(input_ids, labels); labels are IGNORE outside assistant replies."""
    if "text" in row.data:
        ids = _ids(tokenizer, row.data["text"]) + [tokenizer.eos_token_id]
        if tokenizer.bos_token_id is not None:
            return [tokenizer.bos_token_id, *ids], [IGNORE, *ids]
        return ids, list(ids)
    if "messages" in row.data:
        messages = row.data["messages"]
    else:  # preference rows: the desirable reply (DPO's chosen, KTO's completion)
        messages = row.data["prompt"] + row.data.get("chosen", row.data.get("completion", []))
    tools = row.data.get("tools") or None
    ids: list[int] = []
    labels: list[int] = []
    rendered = ""
    for i, turn in enumerate(messages):
        if turn["role"] == "assistant":
            prefix = render_prompt(tokenizer, messages[:i], tools)
            full = tokenizer.apply_chat_template(messages[: i + 1], tools=tools, tokenize=False)
            if not prefix.startswith(rendered) or not full.startswith(prefix):
                raise ValueError(
                    f"line {row.line}: the chat template does not render turns incrementally; "
                    "cannot find the assistant tokens")
            head = _ids(tokenizer, prefix[len(rendered):])
            reply = _ids(tokenizer, full[len(prefix):])
            ids += head + reply
            labels += [IGNORE] * len(head) + reply
            rendered = full
    return ids, labels


def collate(rows: Sequence[tuple[list[int], list[int]]], pad_id: int
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded input ids, labels and attention mask."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(ids)] = 1
    return input_ids, labels, mask
