"""The demo's data, kept apart: what versions train on, what users ask, what scores them.

Why three pools: a version scored on prompts it (or its feedback) trained on measures memory,
not learning. The held-out prompts come from the task world's test split; the training rows and
the simulated users' prompts come from its train split, drawn with different seeds and made
disjoint. `assert_disjoint` checks it in code, and training's overlap check refuses any run
whose test rows leak into training anyway.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from common.jsonl import write_jsonl as write_rows
from training.data import Row, prompt_key
from training.taskworld import Example, make_examples, write_jsonl

__all__ = ["DemoData", "LeakError", "assert_disjoint", "exported_prompts", "make_demo_data",
           "write_held_out_preferences"]


class LeakError(AssertionError):
    """A held-out prompt showed up where training could see it."""


@dataclass(frozen=True)
class DemoData:
    train: Path
    val: Path
    held_out: Path          # SFT rows: the prompts every version is scored on
    held_out_examples: list[Example]
    traffic: list[tuple[str, str]]  # (prompt, answer) the simulated users ask
    held_out_prompts: frozenset[str]


def _key(prompt: str) -> str:
    return prompt_key(Row("sft", {"messages": [{"role": "user", "content": prompt},
                                               {"role": "assistant", "content": "-"}]}))


def assert_disjoint(held_out: Iterable[str], seen: Iterable[str], what: str) -> int:
    """Raise LeakError if any held-out prompt is among `seen` (normalised); the count seen."""
    keys = {_key(p) for p in held_out}
    seen = list(seen)
    leaked = [p for p in seen if _key(p) in keys]
    if leaked:
        raise LeakError(f"{len(leaked)} held-out prompts appear in {what}, e.g. {leaked[0]!r}")
    return len(seen)


def near_miss(ex: Example, rng: random.Random) -> str:
    """A plausible wrong answer: the right one with one word left as the user typed it."""
    words, typed = ex.answer.split(), ex.text.split()
    changed = [i for i, (a, b) in enumerate(zip(words, typed, strict=False)) if a != b]
    if len(words) != len(typed) or not changed:
        return ex.text if ex.text != ex.answer else ex.answer + "!"
    i = rng.choice(changed)
    return " ".join(typed[i] if j == i else w for j, w in enumerate(words))


def make_demo_data(work: Path, task: str, style: str | None, seed: int, *, train_rows: int = 800,
                   traffic_rows: int = 400, held_out_rows: int = 200) -> DemoData:
    train = make_examples(task, "train", train_rows, seed, style=style)
    val = make_examples(task, "val", 100, seed, style=style)
    held_out = make_examples(task, "test", held_out_rows, seed, style=style)
    trained = {ex.text for ex in train}
    # Users ask fresh prompts: the train split again, another seed, none a training text.
    traffic = [ex for ex in make_examples(task, "train", traffic_rows + len(train),
                                          seed + 1000, style=style) if ex.text not in trained]
    traffic = traffic[:traffic_rows]
    held_prompts = frozenset(ex.prompt for ex in held_out)
    assert_disjoint(held_prompts, (ex.prompt for ex in train), "the training rows")
    assert_disjoint(held_prompts, (ex.prompt for ex in traffic), "the simulated traffic")

    files = {name: work / f"{task}-{name}.jsonl" for name in ("train", "val", "held-out")}
    write_jsonl(train, files["train"])
    write_jsonl(val, files["val"])
    write_jsonl(held_out, files["held-out"])
    return DemoData(files["train"], files["val"], files["held-out"], held_out,
                    [(ex.prompt, ex.answer) for ex in traffic], held_prompts)


def write_held_out_preferences(work: Path, examples: list[Example], answers: list[str],
                               seed: int) -> tuple[Path, Path]:
    """Held-out DPO pairs and KTO rows, the kind the feedback export makes: the right answer
    against what the current version answered when it was wrong (a near miss where it was
    right). Scored only; no training step sees them."""
    rng = random.Random(seed)
    wrong = [out if out != ex.answer else near_miss(ex, rng)
             for ex, out in zip(examples, answers, strict=True)]
    dpo, kto = work / "held-out-dpo.jsonl", work / "held-out-kto.jsonl"
    write_rows(({"prompt": ex.prompt, "chosen": ex.answer, "rejected": miss}
                for ex, miss in zip(examples, wrong, strict=True)), dpo)
    write_rows((row for ex, miss in zip(examples, wrong, strict=True) for row in (
        {"prompt": ex.prompt, "completion": ex.answer, "label": True},
        {"prompt": ex.prompt, "completion": miss, "label": False})), kto)
    return dpo, kto


def exported_prompts(rows: Iterable[dict]) -> list[str]:
    """The user turns of exported training rows (SFT `messages`, DPO/KTO `prompt`)."""
    out = []
    for row in rows:
        turns = row.get("messages") or row.get("prompt") or []
        out += [t["content"] for t in turns if t.get("role") == "user"]
    return out
