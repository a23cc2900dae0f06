"""Training data: load, validate, normalise, clean, split and fingerprint JSONL rows.

Why so strict: a training run takes minutes and produces a version that gets
served; a typo in line 3,071 should cost seconds, not a bad adapter. Every row is
checked, every problem names its file, line and rule, and what cleaning removes is
counted in a report that is stored with the version.

Formats (one JSON object per line):
- SFT: chat `messages` (list of {role, content}, last turn from the assistant; roles and
  content as the server accepts them, common/chat.py, tool calls included), with optional
  `tools` (OpenAI function definitions, as in OpenAI's fine-tuning format),
  `prompt` + `completion` (strings, or trl's conversational lists), or plain `text`.
- DPO: `prompt` + `chosen` + `rejected` (strings or conversational lists).
- KTO: `prompt` + `completion` + `label` (bool).
All are normalised to conversational form: `prompt`/`messages` as message lists.
"""

from __future__ import annotations

import hashlib
import json
import random
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.chat import ChatRowError, parse_turn

__all__ = [
    "DataError",
    "Dataset",
    "Problem",
    "Row",
    "SMALL_SET_LIMIT",
    "fingerprint",
    "load_rows",
    "load_dataset",
    "overlapping",
    "prompt_key",
    "split_rows",
]

KINDS = ("sft", "dpo", "kto")
MIN_ROWS = 10
# Above this many rows the split is 80/10/10 instead of 70/15/15.
SMALL_SET_LIMIT = 10_000
MAX_REPORTED = 20


@dataclass(frozen=True)
class Problem:
    """One rule broken by one row."""

    source: str
    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source} line {self.line}" if self.line else self.source
        return f"{where}: [{self.rule}] {self.message}"


class DataError(ValueError):
    """Training data broke a rule; the message lists the lines and the rules."""

    def __init__(self, problems: Sequence[Problem], summary: str = "") -> None:
        self.problems = list(problems)
        shown = "\n".join(f"  {p}" for p in self.problems[:MAX_REPORTED])
        more = len(self.problems) - MAX_REPORTED
        tail = f"\n  ... and {more} more" if more > 0 else ""
        head = summary or f"{len(self.problems)} invalid row(s)"
        super().__init__(f"{head}:\n{shown}{tail}" if self.problems else head)


@dataclass(frozen=True)
class Row:
    """A normalised row. `data` is conversational and JSON-serialisable."""

    kind: str
    data: dict[str, Any]
    source: str = ""
    line: int = 0

    def key(self) -> str:
        """Canonical JSON: what duplicates and the fingerprint are computed over."""
        return json.dumps(self.data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))

    # Convenience views used by encoding and evaluation.
    @property
    def prompt_messages(self) -> list[dict[str, str]]:
        if "messages" in self.data:
            return self.data["messages"][:-1]
        return self.data.get("prompt", [])

    @property
    def answer(self) -> str | None:
        """The reference reply (SFT: last assistant turn; DPO: chosen; KTO: the completion)."""
        if "messages" in self.data:
            return self.data["messages"][-1]["content"]
        if "completion" in self.data:
            return self.data["completion"][-1]["content"]
        if "chosen" in self.data:
            return self.data["chosen"][-1]["content"]
        return None


@dataclass
class Dataset:
    """Cleaned rows of one file and the report of what was dropped."""

    kind: str
    rows: list[Row]
    source: str
    read: int = 0
    dropped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows_read": self.read,
            "rows_kept": len(self.rows),
            "dropped": dict(self.dropped),
            "dropped_examples": self.examples,
        }

    def drop(self, row: Row | None, rule: str, line: int, message: str) -> None:
        self.dropped[rule] += 1
        shown = self.examples.setdefault(rule, [])
        if len(shown) < 3:
            shown.append(f"line {line}: {message}")


class _RowError(Exception):
    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


def _messages(value: Any, what: str, *, need_last_assistant: bool) -> list[dict[str, str]]:
    """Validate a list of turns against the serving schema (common.chat): what the server
    accepts is trainable, as the template will see it (`developer` becomes `system`, text
    parts are joined). A prompt string becomes one user turn, as in trl."""
    if isinstance(value, str) and not need_last_assistant:
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        kinds = "a non-empty list of turns" if need_last_assistant else "a string or a non-empty list of turns"
        raise _RowError("malformed-turns", f"`{what}` must be {kinds}")
    out = []
    for i, turn in enumerate(value):
        try:
            out.append(parse_turn(turn, f"{what}[{i}]"))
        except ChatRowError as exc:
            raise _RowError("malformed-turns", str(exc)) from None
    if need_last_assistant:
        if out[-1]["role"] != "assistant":
            raise _RowError("malformed-turns", f"the last turn of `{what}` must be from the assistant")
        if not any(t["role"] == "user" for t in out[:-1]):
            raise _RowError("malformed-turns", f"`{what}` has no user turn before the assistant's")
        for i, turn in enumerate(out):
            if turn["role"] == "assistant" and not turn["content"].strip() \
                    and not turn.get("tool_calls"):
                raise _RowError("empty-answer", f"assistant turn `{what}[{i}]` is empty")
    return out


def _completion(value: Any, what: str) -> list[dict[str, str]]:
    """A reply: a string or a list of assistant turns; never empty."""
    if isinstance(value, str):
        turns = [{"role": "assistant", "content": value}]
    else:
        turns = _messages(value, what, need_last_assistant=False)
        if any(t["role"] != "assistant" for t in turns):
            raise _RowError("malformed-turns", f"`{what}` may only hold assistant turns")
    if not turns[-1]["content"].strip():
        raise _RowError("empty-answer", f"`{what}` is empty")
    return turns


def _tools(value: Any) -> list[dict[str, Any]]:
    """OpenAI's row-level `tools` (function definitions), rendered into the prompt by the
    chat template exactly as the server renders a request's `tools`."""
    if not isinstance(value, list) or not all(
            isinstance(t, dict) and t.get("type", "function") == "function"
            and isinstance(t.get("function"), dict)
            and isinstance(t["function"].get("name"), str) for t in value):
        raise _RowError("malformed-tools", "`tools` must be a list of "
                        '{"type": "function", "function": {"name": ..., "parameters": ...}}')
    return value


def _missing(obj: dict, expected: str) -> _RowError:
    keys = ", ".join(sorted(obj)) or "none"
    return _RowError("missing-field", f"expected {expected}; the row has keys: {keys}")


def normalise(obj: Any, kind: str) -> dict[str, Any]:
    """One parsed JSON value -> the conversational dict for `kind`; raises _RowError."""
    if not isinstance(obj, dict):
        raise _RowError("not-an-object", f"each line must be a JSON object, got {type(obj).__name__}")
    if kind == "sft":
        if "messages" in obj:
            row = {"messages": _messages(obj["messages"], "messages", need_last_assistant=True)}
            if obj.get("tools"):
                row["tools"] = _tools(obj["tools"])
            return row
        if "prompt" in obj and "completion" in obj:
            prompt = _messages(obj["prompt"], "prompt", need_last_assistant=False)
            return {"messages": prompt + _completion(obj["completion"], "completion")}
        if "text" in obj:
            if not isinstance(obj["text"], str):
                raise _RowError("malformed-turns", "`text` must be a string")
            if not obj["text"].strip():
                raise _RowError("empty-answer", "`text` is empty")
            return {"text": obj["text"]}
        raise _missing(obj, "`messages`, `prompt` + `completion`, or `text`")
    if kind == "dpo":
        if not all(k in obj for k in ("prompt", "chosen", "rejected")):
            raise _missing(obj, "`prompt`, `chosen` and `rejected`")
        row = {
            "prompt": _messages(obj["prompt"], "prompt", need_last_assistant=False),
            "chosen": _completion(obj["chosen"], "chosen"),
            "rejected": _completion(obj["rejected"], "rejected"),
        }
        if row["chosen"] == row["rejected"]:
            raise _RowError("same-pair", "`chosen` and `rejected` are identical")
        return row
    if kind == "kto":
        if not all(k in obj for k in ("prompt", "completion", "label")):
            raise _missing(obj, "`prompt`, `completion` and `label`")
        if not isinstance(obj["label"], bool):
            raise _RowError("malformed-turns", "`label` must be true or false")
        return {
            "prompt": _messages(obj["prompt"], "prompt", need_last_assistant=False),
            "completion": _completion(obj["completion"], "completion"),
            "label": obj["label"],
        }
    raise ValueError(f"unknown data kind {kind!r}; use one of {KINDS}")


def load_rows(path: Path, kind: str, *, strict: bool = True, dataset: Dataset | None = None
              ) -> Dataset:
    """Parse and validate every line. strict: any invalid row is an error (all are listed);
    otherwise invalid rows are dropped and counted in the report."""
    path = Path(path)
    if not path.exists():
        raise DataError([], f"{path}: no such file")
    ds = dataset or Dataset(kind=kind, rows=[], source=str(path))
    problems: list[Problem] = []
    with path.open("r", encoding="utf-8", errors="strict") as fh:
        try:
            lines = list(fh)
        except UnicodeDecodeError as exc:
            raise DataError([Problem(str(path), 0, "encoding", f"not UTF-8: {exc}")]) from None
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue  # blank lines are not rows
        ds.read += 1
        try:
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise _RowError("not-json", f"not valid JSON ({exc.msg} at column {exc.colno})") from None
            ds.rows.append(Row(kind, normalise(obj, kind), str(path), number))
        except _RowError as err:
            if strict:
                problems.append(Problem(str(path), number, err.rule, str(err)))
            else:
                ds.drop(None, err.rule, number, str(err))
    if problems:
        raise DataError(problems, f"{path}: {len(problems)} invalid row(s) (nothing was trained)")
    return ds


def clean(ds: Dataset, *, too_long: Callable[[Row], bool] | None = None) -> Dataset:
    """Drop exact duplicates (after normalisation) and rows the length check refuses."""
    seen: set[str] = set()
    kept: list[Row] = []
    for row in ds.rows:
        key = row.key()
        if key in seen:
            ds.drop(row, "duplicate", row.line, "exact duplicate of an earlier row")
            continue
        if too_long is not None and too_long(row):
            ds.drop(row, "too-long", row.line, "longer than --max-length tokens")
            continue
        seen.add(key)
        kept.append(row)
    ds.rows = kept
    return ds


def load_dataset(path: Path, kind: str, *, strict: bool = True,
                 too_long: Callable[[Row], bool] | None = None,
                 min_rows: int = MIN_ROWS) -> Dataset:
    """Load, validate, clean; refuse a set with fewer than `min_rows` usable rows."""
    ds = clean(load_rows(path, kind, strict=strict), too_long=too_long)
    if len(ds.rows) < min_rows:
        dropped = ", ".join(f"{k}: {v}" for k, v in ds.dropped.items()) or "none dropped"
        raise DataError([Problem(str(path), 0, "too-few-rows",
                                 f"{len(ds.rows)} usable row(s) of {ds.read} read ({dropped}); "
                                 f"at least {min_rows} are needed")],
                        f"{path}: not enough usable rows")
    return ds


def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def prompt_key(row: Row) -> str:
    """What a row asks, normalised (NFKC, case-folded, whitespace collapsed): two rows with
    one key are one question, so they may not sit on both sides of a train/test split."""
    if "text" in row.data:
        return _norm(row.data["text"])
    turns = row.prompt_messages
    return "\n".join(f"{t['role']}:{_norm(t.get('content') or '')}" for t in turns)


def split_rows(rows: Sequence[Row], seed: int, *, need_val: bool = True, need_test: bool = True
               ) -> tuple[list[Row], list[Row], list[Row]]:
    """Seeded shuffle, then 70/15/15 (small sets) or 80/10/10 (above ~10k rows).

    Rows that ask the same question (`prompt_key`: one prompt with several answers, a KTO
    prompt with good and bad replies) go to one split together, so the split itself never
    puts a test question into training.
    """
    order = list(rows)
    random.Random(f"split:{seed}").shuffle(order)
    frac = 0.15 if len(order) <= SMALL_SET_LIMIT else 0.10
    n_val = max(1, round(len(order) * frac)) if need_val else 0
    n_test = max(1, round(len(order) * frac)) if need_test else 0
    groups: dict[str, list[Row]] = {}
    for row in order:
        groups.setdefault(prompt_key(row), []).append(row)
    test: list[Row] = []
    val: list[Row] = []
    train: list[Row] = []
    for group in groups.values():
        if len(test) < n_test:
            test += group
        elif len(val) < n_val:
            val += group
        else:
            train += group
    return train, val, test


def overlapping(train: Sequence[Row], other: Sequence[Row]) -> list[Row]:
    """The rows of `other` whose question (`prompt_key`) is also asked in `train`."""
    asked = {prompt_key(row) for row in train}
    return [row for row in other if prompt_key(row) in asked]


def fingerprint(rows: Iterable[Row]) -> str:
    """sha256 over the canonical JSON of the normalised rows, one per line, in order."""
    h = hashlib.sha256()
    for row in rows:
        h.update(row.key().encode("utf-8"))
        h.update(b"\n")
    return "sha256:" + h.hexdigest()
