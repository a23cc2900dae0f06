"""Rows -> token ids and labels through the base model's own chat template.

Why the whole conversation is tokenized at once: that is what the server does with a chat
history (it renders the template and tokenizes the text in one call), so it is what the
model will see. Tokenizing the prompt and each reply separately and concatenating gives
other ids with some tokenizers: a SentencePiece-style tokenizer writes a word-start marker
before a reply tokenized on its own (`▁HELLO`) that it does not write after `[/INST]` in
the whole text (`HELLO`), so the model would learn replies the server never shows it.

Why render incrementally: the loss must cover the assistant's tokens only (and the
end-of-turn token, or generation never stops), whatever the template looks like. Rendering
the conversation up to each assistant turn finds the reply spans without knowing the
template's markup; the tokens of each prompt must be exactly the first tokens of the whole
conversation, or training could not match what the server sends, and the row is refused.
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
    turns = [i for i, turn in enumerate(messages) if turn["role"] == "assistant"]
    if not turns:
        return [], []
    full = tokenizer.apply_chat_template(messages[: turns[-1] + 1], tools=tools, tokenize=False)
    ids = _ids(tokenizer, full)
    labels = [IGNORE] * len(ids)
    done = 0
    for i in turns:
        prompt = render_prompt(tokenizer, messages[:i], tools)
        through = full if i == turns[-1] else tokenizer.apply_chat_template(
            messages[: i + 1], tools=tools, tokenize=False)
        if not through.startswith(prompt) or not full.startswith(through) or len(prompt) < done:
            raise ValueError(
                f"line {row.line}: the chat template does not render turns incrementally; "
                "cannot find the assistant tokens")
        prompt_ids = _ids(tokenizer, prompt)
        through_ids = ids if through == full else _ids(tokenizer, through)
        if ids[: len(prompt_ids)] != prompt_ids or ids[: len(through_ids)] != through_ids:
            raise ValueError(
                f"line {row.line}: the tokenizer splits the conversation differently from the "
                f"prompt of assistant turn {i} (a token spans the end of the prompt); the "
                "served prompt would not match the trained one")
        labels[len(prompt_ids) : len(through_ids)] = ids[len(prompt_ids) : len(through_ids)]
        done = len(through)
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
