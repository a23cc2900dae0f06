"""The embedded default base model: quality bar, determinism, and a loadable HF directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from training.base_model import QUALITY_BAR, BaseBuildConfig, build_base_model


@pytest.mark.slow
def test_cli_base_build_meets_the_copy_quality_bar(embedded_base: Path) -> None:
    """`loraswap base build` on a built model re-measures 200 held-out copy prompts of each
    kind, both held to the bar: task-world text, and words of random letters."""
    env = {**os.environ, "LORASWAP_BASE_MODEL": str(embedded_base)}
    out = subprocess.run(
        [sys.executable, "-m", "loraswap", "base", "build", "--json"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["copy_accuracy"] >= QUALITY_BAR
    # The default recipe copies made-up words too, which no word list answers.
    assert result["recipe"] == "copy-anything" and result["random_copy_accuracy"] >= QUALITY_BAR
    assert result["path"] == str(embedded_base)


@pytest.mark.slow  # needs the built embedded base
def test_embedded_base_is_a_hf_llama_with_head_dim_64(embedded_base: Path) -> None:
    config = json.loads((embedded_base / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["head_dim"] == 64  # vLLM's CPU attention rejects 16
    tok_cfg = json.loads((embedded_base / "tokenizer_config.json").read_text())
    assert tok_cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert "<|assistant|>" in (embedded_base / "chat_template.jinja").read_text() or \
        "<|assistant|>" in json.dumps(tok_cfg)


@pytest.mark.slow
def test_build_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    """Two short builds with one seed give identical weights; another seed differs."""
    cfg = BaseBuildConfig(seed=7, steps=6, batch_size=8, train_pool=64, eval_prompts=4, warmup=2)
    a = build_base_model(tmp_path / "a", cfg, progress=False)
    b = build_base_model(tmp_path / "b", cfg, progress=False)
    c = build_base_model(tmp_path / "c", BaseBuildConfig(**{**cfg.__dict__, "seed": 8}), progress=False)
    wa, wb, wc = (load_file(r.path / "model.safetensors") for r in (a, b, c))
    assert wa.keys() == wb.keys()
    assert all((wa[k] == wb[k]).all() for k in wa)
    assert any(not (wa[k] == wc[k]).all() for k in wa)
    # A failed or partial build never leaves a half-written directory behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]
