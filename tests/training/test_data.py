"""Data validation, cleaning, splitting and fingerprints: every rule names its line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.data import (
    DataError,
    Row,
    fingerprint,
    load_dataset,
    load_rows,
    overlapping,
    prompt_key,
    split_rows,
)


def write(path: Path, rows: list) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def chat(i: int, answer: str | None = None) -> dict:
    return {"messages": [{"role": "user", "content": f"upper: word {i}"},
                         {"role": "assistant", "content": answer if answer is not None else f"WORD {i}"}]}


def good(n: int) -> list[dict]:
    return [chat(i) for i in range(n)]


def test_not_json_names_line_and_rule(tmp_path):
    path = write(tmp_path / "d.jsonl", [*good(12), "{not json"])
    with pytest.raises(DataError) as err:
        load_dataset(path, "sft")
    assert "line 13" in str(err.value)
    assert "[not-json]" in str(err.value)
    assert err.value.problems[0].line == 13


def test_missing_field_names_line_and_keys(tmp_path):
    path = write(tmp_path / "d.jsonl", [*good(5), {"question": "q", "answer": "a"}, *good(6)])
    with pytest.raises(DataError) as err:
        load_dataset(path, "sft")
    msg = str(err.value)
    assert "line 6" in msg and "[missing-field]" in msg and "question" in msg


def test_empty_assistant_turn_is_an_error(tmp_path):
    path = write(tmp_path / "d.jsonl", [*good(3), chat(99, answer="  "), *good(10)])
    with pytest.raises(DataError) as err:
        load_dataset(path, "sft")
    assert "line 4" in str(err.value) and "[empty-answer]" in str(err.value)


def test_all_problems_are_listed(tmp_path):
    path = write(tmp_path / "d.jsonl", ["oops", *good(10), {"messages": "x"}])
    with pytest.raises(DataError) as err:
        load_dataset(path, "sft")
    assert [(p.line, p.rule) for p in err.value.problems] == [(1, "not-json"), (12, "malformed-turns")]


def test_too_few_rows(tmp_path):
    path = write(tmp_path / "d.jsonl", good(9))
    with pytest.raises(DataError) as err:
        load_dataset(path, "sft")
    assert "[too-few-rows]" in str(err.value) and "9 usable" in str(err.value)


def test_duplicates_after_cleaning_can_leave_too_few(tmp_path):
    path = write(tmp_path / "d.jsonl", good(8) + good(8))
    with pytest.raises(DataError, match="duplicate: 8"):
        load_dataset(path, "sft")


def test_lenient_mode_drops_and_reports(tmp_path):
    rows = [*good(12), "nope", chat(50, answer=""), chat(0), {"messages": [
        {"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]}]
    ds = load_dataset(write(tmp_path / "d.jsonl", rows), "sft", strict=False,
                      too_long=lambda row: "word 11" in row.data["messages"][0]["content"])
    report = ds.report()
    assert report["rows_read"] == 16 and report["rows_kept"] == 11
    assert report["dropped"] == {"not-json": 1, "empty-answer": 1, "malformed-turns": 1,
                                 "duplicate": 1, "too-long": 1}
    assert report["dropped_examples"]["duplicate"][0].startswith("line 15")


def test_formats_normalise_to_messages(tmp_path):
    path = write(tmp_path / "d.jsonl", [
        {"prompt": "upper: a", "completion": "A"},
        {"prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
         "completion": [{"role": "assistant", "content": "x"}]},
        {"text": "free text"},
    ])
    rows = load_rows(path, "sft").rows
    assert rows[0].data == {"messages": [{"role": "user", "content": "upper: a"},
                                         {"role": "assistant", "content": "A"}]}
    assert rows[1].prompt_messages[0]["role"] == "system" and rows[1].answer == "x"
    assert rows[2].data == {"text": "free text"} and rows[2].answer is None


def test_messages_must_end_with_assistant(tmp_path):
    path = write(tmp_path / "d.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(DataError, match=r"line 1: \[malformed-turns\] the last turn"):
        load_rows(path, "sft")


def test_dpo_and_kto_rows(tmp_path):
    dpo = write(tmp_path / "p.jsonl", [
        {"prompt": "upper: a", "chosen": "A", "rejected": "a"},
        {"prompt": "upper: b", "chosen": "B", "rejected": "B"},
        {"prompt": "upper: c", "chosen": "C"},
    ])
    with pytest.raises(DataError) as err:
        load_rows(dpo, "dpo")
    assert [(p.line, p.rule) for p in err.value.problems] == [(2, "same-pair"), (3, "missing-field")]
    kto = write(tmp_path / "k.jsonl", [
        {"prompt": "upper: a", "completion": "A", "label": True},
        {"prompt": "upper: a", "completion": "a", "label": "no"},
    ])
    with pytest.raises(DataError) as err:
        load_rows(kto, "kto")
    assert [(p.line, p.rule) for p in err.value.problems] == [(2, "malformed-turns")]
    ok = load_rows(dpo, "dpo", strict=False).rows
    assert ok[0].data["chosen"] == [{"role": "assistant", "content": "A"}]
    assert ok[0].prompt_messages == [{"role": "user", "content": "upper: a"}]


def test_split_is_seeded_and_sized(tmp_path):
    ds = load_dataset(write(tmp_path / "d.jsonl", good(200)), "sft")
    train, val, test = split_rows(ds.rows, seed=1)
    assert (len(train), len(val), len(test)) == (140, 30, 30)
    again = split_rows(ds.rows, seed=1)
    assert [r.key() for r in again[2]] == [r.key() for r in test]
    other = split_rows(ds.rows, seed=2)
    assert [r.key() for r in other[2]] != [r.key() for r in test]
    assert not {r.key() for r in train} & {r.key() for r in test}
    big = ds.rows * 60  # 12,000 rows: above the small-set limit
    train, val, test = split_rows(big, seed=0)
    assert (len(train), len(val), len(test)) == (9600, 1200, 1200)
    train, val, test = split_rows(ds.rows, seed=0, need_val=False)
    assert (len(train), len(val), len(test)) == (170, 0, 30)


def test_fingerprint_is_of_normalised_rows(tmp_path):
    a = load_rows(write(tmp_path / "a.jsonl", [{"prompt": "upper: a", "completion": "A"}]), "sft")
    b = load_rows(write(tmp_path / "b.jsonl", [
        {"messages": [{"role": "user", "content": "upper: a"},
                      {"role": "assistant", "content": "A"}], "extra": 1}]), "sft")
    assert fingerprint(a.rows) == fingerprint(b.rows)
    assert fingerprint(a.rows).startswith("sha256:")
    c = load_rows(write(tmp_path / "c.jsonl", [{"prompt": "upper: a", "completion": "B"}]), "sft")
    assert fingerprint(c.rows) != fingerprint(a.rows)


def test_rows_take_the_servers_chat_schema(tmp_path):
    """Whatever the server accepts (and the export writes) trains: developer reaches the
    template as system, text parts are joined, tool turns stay."""
    path = write(tmp_path / "d.jsonl", [{"messages": [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "upper: "},
                                     {"type": "text", "text": "a"}], "name": "ann"},
        {"role": "tool", "content": "lookup: A"},
        {"role": "assistant", "content": "A"}]}])
    (row,) = load_rows(path, "sft").rows
    assert row.data["messages"] == [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "upper: a"},
        {"role": "tool", "content": "lookup: A"}, {"role": "assistant", "content": "A"}]


def test_tool_rows_keep_their_tools_and_calls(tmp_path):
    from training.taskworld import LOOKUP_TOOL

    call = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function",
         "function": {"name": "lookup", "arguments": '{"query": "fox"}'}}]}
    rows = [{"messages": [{"role": "user", "content": f"lookup: fox {i}"}, call,
                          {"role": "tool", "tool_call_id": "c1", "content": "an animal"},
                          {"role": "assistant", "content": "It is an animal."}],
             "tools": [LOOKUP_TOOL]} for i in range(12)]
    data = load_dataset(write(tmp_path / "d.jsonl", rows), "sft")
    row = data.rows[0].data
    assert row["tools"] == [LOOKUP_TOOL]
    assert row["messages"][1]["tool_calls"][0]["function"]["arguments"] == {"query": "fox"}
    bad = write(tmp_path / "b.jsonl", [*rows[:11], {**rows[0], "tools": [{"name": "f"}]}])
    with pytest.raises(DataError) as err:
        load_dataset(bad, "sft")
    assert "line 12" in str(err.value) and "[malformed-tools]" in str(err.value)


def _sft(prompt: str, answer: str) -> Row:
    return Row("sft", {"messages": [{"role": "user", "content": prompt},
                                    {"role": "assistant", "content": answer}]})


def test_one_question_never_straddles_the_split():
    """Three answers per prompt, prompts differing only in case and spacing: the seeded split
    keeps each question on one side, for every seed."""
    rows = [_sft(variant.format(i), f"answer {i}.{k}") for i in range(60)
            for k, variant in enumerate(("upper: word{}", "UPPER:  Word{}", "upper: word{} "))]
    assert len({prompt_key(r) for r in rows}) == 60
    for seed in range(5):
        train, val, test = split_rows(rows, seed=seed)
        assert len(train) + len(val) + len(test) == 180 and test and val
        assert not overlapping(train, test) and not overlapping(train, val)
        assert not overlapping(val, test)


def test_overlap_is_found_after_normalisation():
    train = [_sft("copy: Apple  pie", "a"), _sft("copy: tea", "b")]
    test = [_sft("COPY: apple pie", "other answer"), _sft("copy: coffee", "c")]
    assert [r.data["messages"][0]["content"] for r in overlapping(train, test)] == [
        "COPY: apple pie"]
    text = Row("sft", {"text": "Hello   world"})
    assert prompt_key(text) == prompt_key(Row("sft", {"text": "hello world"}))
