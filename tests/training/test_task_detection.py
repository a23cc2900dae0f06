"""Which evaluator a data set gets: the task world's (inferred from prompts) or a user's."""

from __future__ import annotations

import pytest

from training.data import Row
from training.evaluation import detect_task, load_evaluator, taskworld_examples
from training.taskworld import make_examples


def rows(task: str, n: int) -> list[Row]:
    return [Row("sft", {"messages": ex.messages()}) for ex in make_examples(task, "train", n)]


def test_task_is_the_most_common_non_copy_task():
    assert detect_task(rows("upper", 5) + rows("copy", 9)) == "upper"
    assert detect_task(rows("copy", 3)) == "copy"


def test_user_data_has_no_task():
    other = Row("sft", {"messages": [{"role": "user", "content": "hello: there"},
                                     {"role": "assistant", "content": "hi"}]})
    assert detect_task([*rows("upper", 3), other]) is None
    assert detect_task([Row("sft", {"text": "upper: a"})]) is None


def test_examples_use_the_tasks_own_answer_and_skip_undesirable_rows():
    kto = [Row("kto", {"prompt": [{"role": "user", "content": "upper: a b"}],
                       "completion": [{"role": "assistant", "content": "A b"}], "label": False}),
           Row("kto", {"prompt": [{"role": "user", "content": "reverse: a b"}],
                       "completion": [{"role": "assistant", "content": "b a"}], "label": True})]
    examples = taskworld_examples(kto)
    assert [(e.task, e.text, e.answer) for e in examples] == [("reverse", "a b", "b a")]


def test_user_evaluator_spec():
    func = load_evaluator("os.path:join")
    assert func("a", "b") == "a/b"
    with pytest.raises(ValueError, match="module:function"):
        load_evaluator("nocolon")
    with pytest.raises(ValueError, match="not a function"):
        load_evaluator("os.path:nothing_here")
