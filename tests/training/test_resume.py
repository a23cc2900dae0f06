"""An interrupted SFT loop resumes from its checkpoint and ends where an unbroken run ends."""

from __future__ import annotations

import pytest
import torch

from training.data import Row
from training.lora import LoraOptions, build_lora_config
from training.sft import LoopOptions, lora_state, run_sft_loop
from training.taskworld import make_examples


def _model(base):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(base))
    return get_peft_model(model, build_lora_config(LoraOptions(rank=8), model)), \
        AutoTokenizer.from_pretrained(str(base))


@pytest.mark.slow
def test_resume_matches_an_unbroken_run(tiny_llama_factory, tmp_path):
    base = tiny_llama_factory()
    rows = [Row("sft", {"messages": ex.messages()}) for ex in make_examples("upper", "train", 48)]
    train, val = rows[:40], rows[40:]
    opts = LoopOptions(lr=2e-3, epochs=2, batch_size=8, eval_every=2, patience=0, progress=False)

    model, tok = _model(base)
    full = run_sft_loop(model, tok, train, val, opts, run_dir=tmp_path / "a")
    expected = lora_state(model)

    model, tok = _model(base)
    calls = {"n": 0}
    original = model.forward

    def flaky(*args, **kwargs):
        if model.training:
            calls["n"] += 1
            if calls["n"] == 7:
                raise KeyboardInterrupt
        return original(*args, **kwargs)

    model.forward = flaky
    with pytest.raises(KeyboardInterrupt):
        run_sft_loop(model, tok, train, val, opts, run_dir=tmp_path / "b")
    assert (tmp_path / "b" / "checkpoint.pt").exists()

    model, tok = _model(base)  # a fresh process would start from nothing but the checkpoint
    resumed = run_sft_loop(model, tok, train, val, opts, run_dir=tmp_path / "b")
    assert resumed.steps == full.steps == 10
    assert resumed.best_step == full.best_step
    assert resumed.history == full.history
    got = lora_state(model)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
