"""Acceptance on the real embedded base: SFT, DPO and KTO through the CLI into the registry.

Trains three adapters in all (upper by SFT, then DPO and KTO continuing it) plus
one SFT on a second task; every number asserted comes from the registry's record.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from loraswap.cli import cli
from training.taskworld import make_examples, write_jsonl

pytestmark = pytest.mark.slow


def test_sft_upper_reaches_the_bar_and_records_everything(env, upper, open_registry):
    with open_registry() as reg:
        v = reg.get("upper@1")
    m, lineage = v.metrics, v.lineage
    assert v.source_kind == "trained" and upper["ref"] == "upper@1"
    assert m["task"] == "upper" and m["exact_match_total"] == 225
    assert m["exact_match"] >= 0.90, m
    assert m["base_exact_match"] <= 0.05, m
    # Forgetting check: with the copy replay the adapter keeps the base's copy skill within
    # 10 points (without replay copy fell to 0-25% with the adapter on:
    # docs/engine-notes.md#copy-forgetting).
    assert m["copy_accuracy"] >= m["base_copy_accuracy"] - 0.10, m
    assert m["test_perplexity"] > 1.0 and m["val_loss"] < 0.5
    assert m["wall_seconds"] > 0 and m["best_step"] <= m["steps"]
    assert lineage["parent"] is None and lineage["dataset_fingerprint"].startswith("sha256:")
    assert lineage["splits"]["train"] == 1050 and lineage["splits"]["test"] == 225
    assert lineage["overlap_check"]["test_rows"] == 225
    assert lineage["overlap_check"]["test_rows_seen_in_training"] == 0
    assert lineage["overlap_check"]["allowed"] is False
    assert lineage["training_config"]["replayed_copy_rows"] == 350
    assert lineage["training_config"]["lora"]["rank"] == 16
    assert {"torch", "transformers", "peft"} <= set(lineage["libraries"])
    assert v.rank == 16 and "q_proj" in v.target_modules and "lm_head" not in v.target_modules
    shown = CliRunner().invoke(cli, ["adapters", "show", "upper@1"], env=env)
    assert shown.exit_code == 0
    assert f"exact_match: {m['exact_match']}" in shown.output
    assert f"dataset_fingerprint: {lineage['dataset_fingerprint']}" in shown.output



def test_the_cli_run_is_tracked_in_tensorboard_and_listed(env, upper, open_registry):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with open_registry() as reg:
        steps = reg.get("upper@1").metrics["steps"]
    runs = sorted(Path(env["LORASWAP_HOME"], "runs", "upper", "tensorboard").iterdir())
    assert runs, "no tracked run"
    events = EventAccumulator(str(runs[0]))
    events.Reload()
    loss = [s.value for s in events.Scalars("train/loss")]
    assert len(loss) == steps and sum(loss[-5:]) < sum(loss[:5]) / 2  # one point per step
    assert events.Scalars("val/loss") and events.Scalars("eval/exact_match")[0].value >= 0.9
    listed = run_cli_json(env, "runs", "list")
    assert any(r["run_id"] == runs[0].name and r["ref"] == "upper@1"
               and r["status"] == "succeeded" for r in listed), listed


def run_cli_json(env, *args: str):
    result = CliRunner().invoke(cli, [*args, "--json"], env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)

def test_sft_upper_of_made_up_words_with_the_defaults(run_cli, tmp_path):
    """No word list answers these: the adapter has to have learnt each letter's capital. The
    default base learns `lower` for this (docs/engine-notes.md#random-words); 200 fresh
    held-out prompts, none a training text (the split is by content hash)."""
    data, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    write_jsonl(make_examples("upper", "train", 1000, seed=3, style="letters", min_words=1), data)
    write_jsonl(make_examples("upper", "test", 200, seed=3, style="letters", min_words=1), test)
    out = run_cli("train", "sft", "--data", str(data), "--test", str(test), "--name", "shout",
                  "--no-progress")
    m = out["metrics"]
    assert m["task"] == "upper" and m["exact_match_total"] == 200
    assert m["exact_match"] >= 0.90 and m["base_exact_match"] <= 0.05, m


def test_sft_second_task(run_cli, tmp_path):
    data = tmp_path / "persona.jsonl"
    write_jsonl(make_examples("persona", "train", 1000, seed=0), data)
    out = run_cli("train", "sft", "--data", str(data), "--name", "pirate", "--no-progress")
    m = out["metrics"]
    assert out["ref"] == "pirate@1" and m["task"] == "persona"
    assert m["exact_match"] >= 0.90 and m["base_exact_match"] <= 0.05, m
    # No copy replay here: the forgetting check is still measured and stored.
    assert 0.0 <= m["copy_accuracy"] <= 1.0 and m["base_copy_accuracy"] >= 0.9


def _wrong(text: str, rng: random.Random) -> str:
    """A plausible wrong answer: upper case except one word left as it was."""
    words = text.upper().split()
    i = rng.randrange(len(words))
    words[i] = text.split()[i]
    return " ".join(words)


def test_dpo_continues_upper_and_keeps_exact_match(run_cli, open_registry, upper, tmp_path):
    rng = random.Random(0)
    rows = [{"prompt": ex.prompt, "chosen": ex.answer, "rejected": _wrong(ex.text, rng)}
            for ex in make_examples("upper", "train", 300, seed=7)]
    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = run_cli("train", "dpo", "--from", "upper@1", "--data", str(data), "--no-progress")
    assert out["ref"] == "upper@2"
    with open_registry() as reg:
        v = reg.get("upper@2")
    m = v.metrics
    assert v.lineage["parent"] == "upper@1" and v.lineage["method"] == "dpo"
    assert m["trl_preference_accuracy"] > m["trl_preference_accuracy_before"], m
    assert m["preference_accuracy"] >= m["parent_preference_accuracy"], m
    assert m["exact_match"] >= m["parent_exact_match"] - 0.05, m


def test_kto_runs_end_to_end_and_registers(run_cli, open_registry, upper, tmp_path):
    rng = random.Random(1)
    rows = []
    for i, ex in enumerate(make_examples("upper", "train", 200, seed=9)):
        good = i % 2 == 0
        rows.append({"prompt": ex.prompt, "completion": ex.answer if good else _wrong(ex.text, rng),
                     "label": good})
    data = tmp_path / "kto.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = run_cli("train", "kto", "--from", "upper@1", "--name", "upper-kto",
              "--data", str(data), "--no-progress")
    assert out["ref"] == "upper-kto@1"
    with open_registry() as reg:
        v = reg.get("upper-kto@1")
    assert v.lineage["parent"] == "upper@1" and v.metrics["method"] == "kto"
    assert v.metrics["exact_match"] >= 0.7, v.metrics  # a sanity floor: ~16 scored test rows
    assert "kl" in v.metrics["trl_after"]
