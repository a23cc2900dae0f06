from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from loraswap.cli import cli
from router import FeedbackIn, RequestRecord, Router


def _ask(router: Router, rid: str, user: str, text: str, output: str) -> None:
    route = router.route("bot", user)
    router.log_request(RequestRecord(
        request_id=rid, model="bot", served=route.target, route=route,
        prompt=[{"role": "user", "content": text}], output=output))


def _fb(router: Router, rid: str, **kind) -> None:
    router.record_feedback(FeedbackIn(request_id=rid, **kind))


@pytest.fixture
def judged(router: Router) -> Router:
    router.create(alias="bot", variants=[("support@1", 1), ("support@2", 1)], retention=True,
                  metric="score", score_min=1, score_max=5)
    router.start("bot")
    _ask(router, "good", "u1", "upper: abc", "ABC")
    _ask(router, "bad", "u2", "upper: abc", "abc")
    _ask(router, "fixed", "u3", "upper: xy", "xY")
    _ask(router, "liked", "u4", "upper: q", "Q")
    _ask(router, "meh", "u5", "upper: m", "m?")
    _ask(router, "p1", "u6", "copy: hi", "hi")
    _ask(router, "p2", "u7", "copy: hi", "hi hi")
    _fb(router, "good", thumb="up")
    _fb(router, "bad", thumb="down")
    _fb(router, "fixed", correction="XY")
    _fb(router, "liked", score=5)
    _fb(router, "meh", score=3)  # middling: not used
    _fb(router, "p1", preferred_over="p2")
    return router


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _bot(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def test_sft_rows_are_accepted_answers_and_corrections(judged: Router):
    rows = judged.export("sft", experiment="bot").rows
    assert rows == [
        {"messages": _user("upper: abc") + _bot("ABC")},
        {"messages": _user("upper: xy") + _bot("XY")},
        {"messages": _user("upper: q") + _bot("Q")},
    ]


def test_dpo_rows_pair_on_the_same_prompt(judged: Router):
    rows = judged.export("dpo").rows
    assert {"prompt": _user("copy: hi"), "chosen": _bot("hi"), "rejected": _bot("hi hi")} in rows
    assert {"prompt": _user("upper: xy"), "chosen": _bot("XY"), "rejected": _bot("xY")} in rows
    assert {"prompt": _user("upper: abc"), "chosen": _bot("ABC"), "rejected": _bot("abc")} in rows
    assert len(rows) == 3


def test_kto_rows_are_labelled_completions(judged: Router):
    rows = judged.export("kto").rows
    labels = {(r["prompt"][0]["content"], r["completion"][0]["content"]): r["label"] for r in rows}
    assert labels == {("upper: abc", "ABC"): True, ("upper: abc", "abc"): False,
                      ("upper: xy", "xY"): False, ("upper: xy", "XY"): True,
                      ("upper: q", "Q"): True}


def test_nothing_to_export_without_retention(router: Router):
    router.create(alias="bot", variants=[("support@1", 1), ("support@2", 1)])
    router.start("bot")
    _ask(router, "r1", "u1", "upper: a", "A")
    _fb(router, "r1", thumb="up")
    result = router.export("sft", experiment="bot")
    assert result.rows == []
    assert "without retention" in result.explain_empty()
    assert "no feedback" in router.export("sft", adapter="other").explain_empty()


def test_cli_export_writes_jsonl_and_says_when_empty(tmp_path, monkeypatch, judged: Router):
    judged.flush()
    assert judged.db_path == tmp_path / "loraswap.db"
    monkeypatch.setenv("LORASWAP_HOME", str(tmp_path))
    out = tmp_path / "dpo.jsonl"
    runner = CliRunner()
    res = runner.invoke(cli, ["feedback", "export", "--experiment", "bot", "--format", "dpo",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "wrote 3 dpo rows" in res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and set(rows[0]) == {"prompt", "chosen", "rejected"}
    res = runner.invoke(cli, ["feedback", "export", "--adapter", "nope", "--format", "sft",
                              "--out", str(tmp_path / "x.jsonl")])
    assert res.exit_code == 1 and "nothing to export" in res.output
    assert not (tmp_path / "x.jsonl").exists()
