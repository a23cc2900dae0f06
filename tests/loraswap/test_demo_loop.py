"""The retraining loop end to end on the embedded default: train -> A/B -> feedback -> export ->
train the next version from the feedback -> register. Real engine, real server, real training."""

from __future__ import annotations

from pathlib import Path

import pytest

from loraswap.demo import DemoConfig, run_demo
from loraswap.settings import Settings
from loraswap.wiring import open_registry

pytestmark = pytest.mark.slow


def test_feedback_trains_a_better_next_version(embedded_base: Path, tmp_path: Path) -> None:
    settings = Settings.from_env(home=str(tmp_path / "home"), base_model=str(embedded_base))
    summary = run_demo(settings, DemoConfig(users=40, requests_per_user=2))
    v1, v2, v3 = summary["v1"], summary["v2"], summary["v3"]

    # v2 is the better version, and the experiment sees it.
    assert v2["exact_match"] > v1["exact_match"] + 0.3, (v1, v2)
    variants = {v["variant"]: v for v in summary["results"]["variants"]}
    assert set(variants) == {v1["ref"], v2["ref"]}
    assert sum(v["requests"] for v in variants.values()) == 80
    assert variants[v2["ref"]]["thumbs"]["rate"] > variants[v1["ref"]]["thumbs"]["rate"]
    assert summary["results"]["srm"]["flagged"] is False

    # The feedback became training data, and v3 trained on it is registered with its lineage.
    assert summary["exported_rows"] > 0
    with open_registry(settings) as registry:
        stored = registry.get(v3["ref"], verify=True)
    assert stored.version == 3 and stored.status == "active"
    assert stored.lineage["parent"] == v2["ref"]
    assert stored.lineage["dataset_fingerprint"]
    # Learning, measured on held-out prompts: v3 is at least as good as v2 (within noise).
    assert v3["exact_match"] >= v2["exact_match"] - 0.03, (v2, v3)
