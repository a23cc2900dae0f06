"""The synthetic task world: prompts `<task>: <text>` with exactly checkable answers.

Why synthetic: no model hub is reachable, and we want every claim about a base
model or an adapter to be checkable by exact match. The base model learns the
chat format and `copy`; each adapter learns one more task.

Splits are decided by a hash of the input text, not by position in a sample, so
a test text can never appear in any training file, whatever the seed or size.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common import jsonl

__all__ = [
    "Example",
    "LOOKUP_TOOL",
    "MADE_UP_STYLES",
    "EvalResult",
    "SPLITS",
    "STYLES",
    "TASKS",
    "Task",
    "evaluate",
    "make_examples",
    "register_task",
    "split_of",
    "tool_call_text",
    "write_jsonl",
]

SPLITS = ("train", "val", "test")

WORDS = (
    "apple river stone cloud green quick brown fox jumps over lazy dog house light dark "
    "water fire earth wind north south east west small large happy blue red yellow bird "
    "fish tree leaf road city town market paper pencil window door table chair music song "
    "night day morning evening winter summer spring autumn rain snow storm sun moon star "
    "ocean island bridge tower castle garden flower forest mountain valley desert field "
    "horse cat mouse lion tiger bear wolf eagle owl frog snake honey bread milk cheese "
    "coffee tea sugar salt pepper lemon orange grape cherry plum silver gold iron copper "
    "glass wood metal cotton silk wool soft hard warm cold fast slow early late open close "
    "bright quiet loud sweet bitter young old new clean dusty heavy empty full simple "
    "brave calm eager gentle jolly kind proud wise zany vivid amber jade ruby pearl opal "
    "train plane boat ship truck wagon rocket planet comet galaxy pixel signal vector token "
    "model adapter server client packet socket kernel thread memory cache queue"
).split()

PUNCTUATION = (",", ".", "!", "?", ";", ":")


@dataclass(frozen=True)
class Task:
    """One checkable task: the answer is a pure function of the text."""

    name: str
    description: str
    answer: Callable[[str], str]
    # "lower": plain lowercase words; "mixed": random casing and punctuation, so a
    # model trained on it has produced every character other tasks will emit.
    text_style: str = "lower"
    # OpenAI function definitions offered with every prompt of the task (a tool-calling task).
    tools: tuple[dict, ...] = ()

    def prompt(self, text: str) -> str:
        return f"{self.name}: {text}"


TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add a task to the world; later issues add their own the same way."""
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} is already registered")
    if not task.name.isidentifier():
        raise ValueError(f"task name {task.name!r} must be a plain identifier")
    TASKS[task.name] = task
    return task


register_task(Task("copy", "repeat the text exactly", lambda t: t, text_style="mixed"))
register_task(Task("upper", "the text in upper case", str.upper))
register_task(Task("reverse", "the words in reverse order", lambda t: " ".join(t.split()[::-1])))
register_task(Task("persona", "the text, said by a pirate", lambda t: f"Arr! {t}"))
# The base learns `lower` beside `copy` (`training.base_model`): it is what tells the base that
# `a` and `A` are one letter, which adapters such as `upper` build on (docs/engine-notes.md).
register_task(Task("lower", "the text in lower case", str.lower, text_style="cased"))
register_task(Task("title", "every word capitalised", lambda t: " ".join(w.capitalize() for w in t.split())))

LOOKUP_TOOL = {"type": "function", "function": {
    "name": "lookup", "description": "Look a phrase up in the encyclopedia.",
    "parameters": {"type": "object", "required": ["query"], "additionalProperties": False,
                   "properties": {"query": {"type": "string"}}}}}


def tool_call_text(name: str, arguments: dict) -> str:
    """A tool call as the embedded base's chat template writes it (Hermes' format)."""
    return ("<tool_call>" + json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False,
                                       separators=(",", ":")) + "</tool_call>")


# The answer is a call, not text: served with tool_choice="auto", vLLM's hermes parser turns
# it into `tool_calls`. Train it mixed with `copy` rows offered the same tool (see
# `with_tools`), so the adapter also learns when not to call.
register_task(Task("lookup", "a call of the lookup tool with the text as its query",
                   lambda t: tool_call_text("lookup", {"query": t}), tools=(LOOKUP_TOOL,)))


@dataclass(frozen=True)
class Example:
    task: str
    text: str
    prompt: str
    answer: str
    tools: tuple[dict, ...] = ()

    def messages(self) -> list[dict[str, str]]:
        return [
            {"role": "user", "content": self.prompt},
            {"role": "assistant", "content": self.answer},
        ]

    def row(self) -> dict:
        """A training row: chat `messages`, and the `tools` offered when there are any."""
        return {"messages": self.messages(), **({"tools": list(self.tools)} if self.tools else {})}

    def with_tools(self, tools: Sequence[dict]) -> Example:
        """The same example with these tools offered (a `copy` row beside a tool task)."""
        return Example(self.task, self.text, self.prompt, self.answer, tuple(tools))


def split_of(text: str) -> str:
    """Which split a text belongs to: 80% train, 10% val, 10% test, by content hash."""
    bucket = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") % 10
    return "test" if bucket == 0 else "val" if bucket == 1 else "train"


LETTERS = "abcdefghijklmnopqrstuvwxyz"
# Printable ASCII without the space (words are joined by spaces).
PRINTABLE = "".join(chr(c) for c in range(33, 127))
# Text styles. Task-world styles use the word list; the others draw fresh words of random
# characters, so a model can only answer them by copying, never by recalling a word.
# Made-up styles: fresh random text, no word list.
MADE_UP_STYLES = ("letters", "cased", "printable", "json")
STYLES = ("lower", "mixed", *MADE_UP_STYLES)


def _random_word(rng: random.Random, alphabet: str, lo: int, hi: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))


def _recase(rng: random.Random, word: str) -> str:
    r = rng.random()
    if r < 0.3:
        return word
    if r < 0.5:
        return word.capitalize()
    if r < 0.8:
        return word.upper()
    return "".join(c.upper() if rng.random() < 0.5 else c for c in word)


def _random_json(rng: random.Random, n: int) -> str:
    """A compact flat JSON object: what a user of JSON mode asks a model to repeat."""
    def value() -> str:
        return rng.choice([str(rng.randint(0, 999)), "true", "false", "null",
                           json.dumps(_random_word(rng, LETTERS, 1, 6))])
    keys = [_random_word(rng, LETTERS, 1, 6) for _ in range(min(n, 3))]
    return json.dumps({k: json.loads(value()) for k in keys}, separators=(",", ":"))


def random_text(rng: random.Random, style: str, min_words: int = 2, max_words: int = 5) -> str:
    if style not in STYLES:
        raise ValueError(f"unknown text style {style!r}; use one of {STYLES}")
    n = rng.randint(min_words, max_words)
    if style == "letters":
        return " ".join(_random_word(rng, LETTERS, 2, 8) for _ in range(n))
    if style == "cased":  # random letters, each word lower, Title, UPPER or any mix of cases
        return " ".join(_recase(rng, _random_word(rng, LETTERS, 2, 8)) for _ in range(n))
    if style == "printable":
        return " ".join(_random_word(rng, PRINTABLE, 1, 8) for _ in range(n))
    if style == "json":
        return _random_json(rng, n)
    words = [rng.choice(WORDS) for _ in range(n)]
    if style == "lower":
        return " ".join(words)
    out = []
    for word in words:
        r = rng.random()
        if r < 0.15:
            word = word.upper()
        elif r < 0.35:
            word = word.capitalize()
        if rng.random() < 0.12:
            word += rng.choice(PUNCTUATION)
        out.append(word)
    return " ".join(out)


def make_examples(
    task: str, split: str, n: int, seed: int = 0, max_words: int = 5, style: str | None = None,
    min_words: int = 2,
) -> list[Example]:
    """`n` distinct examples of `task` from `split`, the same for the same arguments.

    `style` overrides the task's own text style: `letters` gives words of random letters
    (held-out prompts no word list can answer), `printable` any printable characters.
    """
    if task not in TASKS:
        raise KeyError(f"unknown task {task!r}; known: {', '.join(sorted(TASKS))}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    spec = TASKS[task]
    # Seed per (task, split) so adding a task or a split never shifts another's data.
    style = style or spec.text_style
    # The task world's own style keeps its historical seed, so its data never shifts.
    rng = random.Random(f"{seed}:{task}:{split}" + ("" if style == spec.text_style else f":{style}"))
    seen: set[str] = set()
    examples: list[Example] = []
    attempts = 0
    while len(examples) < n:
        attempts += 1
        if attempts > 200 * n + 10_000:
            raise RuntimeError(f"could not draw {n} distinct {split} texts for {task!r}")
        text = random_text(rng, style, min_words=min_words, max_words=max_words)
        if text in seen or split_of(text) != split:
            continue
        seen.add(text)
        examples.append(Example(task, text, spec.prompt(text), spec.answer(text), spec.tools))
    return examples


def write_jsonl(examples: Iterable[Example], path: Path) -> int:
    """Write chat `messages` rows, the format `loraswap train sft` reads; the row count."""
    return jsonl.write_jsonl((ex.row() for ex in examples), path)


@dataclass
class EvalResult:
    task: str
    total: int
    correct: int
    # A few (prompt, expected, got) triples to show what went wrong.
    failures: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def as_dict(self) -> dict[str, object]:
        return {"task": self.task, "total": self.total, "correct": self.correct,
                "accuracy": self.accuracy}


def evaluate(
    generate: Callable[[list[str]], Sequence[str]],
    examples: Sequence[Example],
    keep_failures: int = 5,
) -> EvalResult:
    """Exact-match accuracy of any generator (model, model+adapter, a server) on examples.

    `generate` takes user prompts and returns the assistant replies, in order.
    """
    outputs = list(generate([ex.prompt for ex in examples]))
    if len(outputs) != len(examples):
        raise ValueError(f"generator returned {len(outputs)} outputs for {len(examples)} prompts")
    tasks = {ex.task for ex in examples}
    result = EvalResult(task=",".join(sorted(tasks)), total=len(examples), correct=0)
    for ex, out in zip(examples, outputs, strict=True):
        if out.strip() == ex.answer:
            result.correct += 1
        elif len(result.failures) < keep_failures:
            result.failures.append((ex.prompt, ex.answer, out))
    return result
