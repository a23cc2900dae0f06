"""The retraining loop end to end on the embedded default: train -> A/B -> feedback -> export
(SFT, DPO, KTO) -> train the next versions from the feedback -> register -> serve. Real engine,
real server, real training; every score is on held-out prompts that no step trained on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loraswap.demo import DemoConfig, run_demo
from loraswap.settings import Settings
from loraswap.wiring import open_registry

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(embedded_base: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Settings]:
    home = tmp_path_factory.mktemp("demo") / "home"
    settings = Settings.from_env(home=str(home), base_model=str(embedded_base))
    return run_demo(settings, DemoConfig()), settings


def _user_prompts(path: Path) -> list[str]:
    out = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        turns = row.get("messages") or row.get("prompt")
        turns = [{"role": "user", "content": turns}] if isinstance(turns, str) else turns
        out += [t["content"].casefold() for t in turns if t["role"] == "user"]
    return out


def test_no_held_out_prompt_reaches_traffic_or_training(demo):
    summary, settings = demo
    held_out = {p.casefold() for p in summary["held_out"]}
    assert len(held_out) == 200
    assert not held_out & {t["prompt"].casefold() for t in summary["traffic"]}
    work = settings.home / "demo"
    for name in ("feedback-sft", "feedback-dpo", "feedback-kto", "upper-train"):
        seen = _user_prompts(work / f"{name}.jsonl")
        assert seen and not held_out & set(seen), name
    assert set(_user_prompts(work / "upper-held-out.jsonl")) == held_out
    with open_registry(settings) as registry:
        for label in ("v1", "v2", "v3", "dpo", "kto"):
            lineage = registry.get(summary[label]["ref"]).lineage
            assert lineage["overlap_check"]["test_rows_seen_in_training"] == 0, label
            assert lineage["overlap_check"]["allowed"] is False


def test_the_experiment_sees_the_better_version(demo):
    summary, _ = demo
    v1, v2 = summary["v1"], summary["v2"]
    assert v2["exact_match"] > v1["exact_match"] + 0.3, (v1, v2)
    variants = {v["variant"]: v for v in summary["results"]["variants"]}
    assert set(variants) == {v1["ref"], v2["ref"]}
    assert sum(v["requests"] for v in variants.values()) == 240
    assert variants[v2["ref"]]["thumbs"]["rate"] > variants[v1["ref"]]["thumbs"]["rate"]
    assert summary["results"]["srm"]["flagged"] is False


def test_feedback_trains_a_better_next_version(demo):
    summary, settings = demo
    v2, v3 = summary["v2"], summary["v3"]
    assert summary["exported_rows"]["sft"] > 0
    with open_registry(settings) as registry:
        stored = registry.get(v3["ref"], verify=True)
    assert stored.version == 3 and stored.lineage["parent"] == v2["ref"]
    # Learning, on the 200 held-out prompts no version and no feedback saw.
    assert v3["exact_match"] >= v2["exact_match"] + 0.05, (v2["exact_match"], v3["exact_match"])


def test_dpo_and_kto_from_exported_feedback_are_trained_registered_and_served(demo):
    summary, settings = demo
    v3, dpo, kto = summary["v3"], summary["dpo"], summary["kto"]
    assert summary["exported_rows"]["dpo"] > 0 and summary["exported_rows"]["kto"] > 0
    # DPO: on held-out pairs (the right answer vs a near miss) the right answer gains
    # log-probability over the wrong one, and no pair's preference is lost on balance. Both
    # steps keep exact match on the held-out prompts within 8 points of v3 (16 of 200; a
    # broken step, such as lr 2e-4, fell 32). Runs on 2026-12-06: accuracy tied at 96.0% ->
    # 96.0% (the parent already right on 192 of 200 pairs), and KTO lost 5 to 6.5 points.
    assert dpo["preference_margin"] > dpo["parent_preference_margin"], dpo
    assert dpo["preference_accuracy"] >= dpo["parent_preference_accuracy"], dpo
    assert abs(dpo["parent_exact_match"] - v3["exact_match"]) <= 0.01, (dpo, v3)
    assert dpo["exact_match"] >= v3["exact_match"] - 0.08, dpo
    assert kto["exact_match"] >= v3["exact_match"] - 0.08, kto
    with open_registry(settings) as registry:
        assert registry.get(dpo["ref"]).lineage["parent"] == v3["ref"]
        assert registry.get(kto["ref"]).lineage["method"] == "kto"
    # Served through the real server, on the same 200 held-out prompts, each version scores
    # what training measured with transformers+peft (greedy on both sides: equal but for a
    # rare near-tie between two tokens).
    for label in ("v1", "v2", "v3", "dpo", "kto"):
        version = summary[label]
        assert abs(summary["served"][version["ref"]] - version["exact_match"]) <= 0.02, label
