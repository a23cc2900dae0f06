"""The task world: answers are right, splits are disjoint and reproducible, the grader is exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.taskworld import TASKS, evaluate, make_examples, split_of, write_jsonl


def test_answers_follow_each_task_rule() -> None:
    assert TASKS["copy"].answer("Red fox!") == "Red fox!"
    assert TASKS["upper"].answer("red fox") == "RED FOX"
    assert TASKS["reverse"].answer("red quick fox") == "fox quick red"
    assert TASKS["persona"].answer("red fox") == "Arr! red fox"
    assert TASKS["title"].answer("red fox") == "Red Fox"


@pytest.mark.parametrize("task", sorted(TASKS))
def test_splits_are_disjoint_distinct_and_seeded(task: str) -> None:
    train = make_examples(task, "train", 300, seed=1)
    test = make_examples(task, "test", 100, seed=1)
    assert len({e.text for e in train}) == 300
    assert not {e.text for e in train} & {e.text for e in test}
    assert all(split_of(e.text) == "test" for e in test)
    assert make_examples(task, "test", 100, seed=1) == test
    assert make_examples(task, "test", 100, seed=2) != test
    assert all(e.prompt == f"{task}: {e.text}" for e in test)


def test_copy_texts_cover_upper_case_and_punctuation() -> None:
    """The base must have emitted every character adapters will emit.

    docs/engine-notes.md#base-vocabulary
    """
    text = " ".join(e.text for e in make_examples("copy", "train", 2000))
    assert set("ABCDEFGHIJKLMNOPRSTUVWY") <= set(text)
    assert "!" in text


def test_evaluate_is_exact_match_and_keeps_failures() -> None:
    examples = make_examples("upper", "test", 10)
    answers = {e.prompt: e.answer for e in examples}

    def half_right(prompts: list[str]) -> list[str]:
        return [answers[p] if i % 2 == 0 else answers[p].lower() for i, p in enumerate(prompts)]

    result = evaluate(half_right, examples)
    assert (result.correct, result.total) == (5, 10)
    assert result.accuracy == 0.5
    assert result.failures and result.failures[0][1] != result.failures[0][2]
    with pytest.raises(ValueError):
        evaluate(lambda prompts: prompts[:-1], examples)


def test_jsonl_rows_are_chat_messages(tmp_path: Path) -> None:
    path = tmp_path / "upper.jsonl"
    assert write_jsonl(make_examples("upper", "train", 5), path) == 5
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [m["role"] for m in rows[0]["messages"]] == ["user", "assistant"]
    assert rows[0]["messages"][1]["content"] == rows[0]["messages"][1]["content"].upper()
