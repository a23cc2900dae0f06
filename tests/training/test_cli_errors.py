"""`loraswap train` refuses bad data and unusable options before training, registering nothing."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from adapters import Registry
from loraswap.cli import cli
from loraswap.settings import Settings
from training.taskworld import make_examples, write_jsonl


@pytest.fixture()
def env(tmp_path, monkeypatch, tiny_llama_factory):
    base = tiny_llama_factory()
    monkeypatch.setenv("LORASWAP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LORASWAP_BASE_MODEL", str(base))
    return tmp_path


def train(*args: str):
    return CliRunner().invoke(cli, ["train", *args], catch_exceptions=False)


def registered() -> list:
    s = Settings.from_env()
    if not s.db_path.exists():
        return []
    with Registry(s.db_path, s.store_dir, s.base_model_dir) as reg:
        return reg.list(include_archived=True)


def good_rows(n: int = 20) -> list[str]:
    return [json.dumps({"messages": ex.messages()}) for ex in make_examples("upper", "train", n)]


@pytest.mark.parametrize(("bad", "line", "rule"), [
    ("{this is not json", 4, "not-json"),
    (json.dumps({"prompt": "upper: a"}), 4, "missing-field"),
    (json.dumps({"messages": [{"role": "user", "content": "upper: a"},
                              {"role": "assistant", "content": ""}]}), 4, "empty-answer"),
])
def test_bad_row_names_line_and_rule(env, bad, line, rule):
    rows = good_rows()
    rows.insert(line - 1, bad)
    data = env / "bad.jsonl"
    data.write_text("\n".join(rows) + "\n")
    result = train("sft", "--data", str(data), "--name", "bad", "--no-progress")
    assert result.exit_code == 1
    assert f"line {line}: [{rule}]" in result.output
    assert "nothing was registered" in result.output
    assert registered() == []
    assert not (Settings.from_env().home / "runs" / "bad").exists()


def test_too_few_usable_rows(env):
    data = env / "few.jsonl"
    data.write_text("\n".join(good_rows(9)) + "\n")
    result = train("sft", "--data", str(data), "--name", "few", "--no-progress")
    assert result.exit_code == 1
    assert "[too-few-rows]" in result.output and "9 usable row(s)" in result.output
    assert registered() == []


def test_qlora_without_cuda_is_a_clear_error(env):
    import torch

    assert not torch.cuda.is_available(), "this test checks the CPU-only refusal"
    data = env / "ok.jsonl"
    write_jsonl(make_examples("upper", "train", 20), data)
    result = train("sft", "--data", str(data), "--name", "q", "--qlora")
    assert result.exit_code == 2
    assert "QLoRA needs a CUDA GPU" in result.output
    assert registered() == []
    result = train("dpo", "--data", str(data), "--name", "q", "--qlora")
    assert result.exit_code == 2 and "QLoRA needs a CUDA GPU" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--targets", "q_proj,lm_head"], "cannot serve LoRA on embeddings or the output head"),
    (["--rank", "128"], "above the server's max_lora_rank 64"),
    (["--dropout", "1.5"], "--dropout 1.5"),
])
def test_unservable_options_are_refused(env, args, message):
    data = env / "ok.jsonl"
    write_jsonl(make_examples("upper", "train", 20), data)
    result = train("sft", "--data", str(data), "--name", "x", *args)
    assert result.exit_code == 2
    assert message in result.output


def test_base_other_than_the_registrys_is_refused(env, tiny_llama_factory):
    other = tiny_llama_factory(hidden_size=128, intermediate_size=256)
    data = env / "ok.jsonl"
    write_jsonl(make_examples("upper", "train", 20), data)
    result = train("sft", "--data", str(data), "--name", "x", "--base", str(other))
    assert result.exit_code == 2
    assert "not the base model the registry serves" in result.output


def test_a_test_file_that_repeats_training_prompts_is_refused(env):
    rows = good_rows(40)
    data, test = env / "train.jsonl", env / "test.jsonl"
    data.write_text("\n".join(rows) + "\n")
    leaked = json.loads(rows[7])
    leaked["messages"][0]["content"] = leaked["messages"][0]["content"].upper() + "  "
    test.write_text("\n".join([json.dumps(leaked), *good_rows(45)[40:]]) + "\n")
    result = train("sft", "--data", str(data), "--test", str(test), "--name", "leaky",
                   "--no-progress")
    assert result.exit_code == 1, result.output
    assert "1 of 6 test rows ask what a training row asks" in result.output
    assert f"{test} line 1: [train-test-overlap]" in result.output
    assert "--allow-overlap" in result.output and "nothing was registered" in result.output
    assert registered() == []


def test_overlap_allowed_is_recorded(tmp_path):
    from training.runs import load_splits

    data, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    data.write_text("\n".join(good_rows(40)) + "\n")
    test.write_text("\n".join(good_rows(40)) + "\n")  # every row: in train or in val
    splits = load_splits(data, "sft", val=None, test=test, seed=0, strict=True, too_long=None,
                         allow_overlap=True)
    record = splits.lineage()["overlap_check"]
    assert record["allowed"] is True and record["test_rows"] == 40
    assert record["test_rows_seen_in_training"] == len(splits.train) > 0
