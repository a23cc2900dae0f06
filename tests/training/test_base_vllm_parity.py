"""The built base model in the real vLLM engine gives transformers' greedy tokens exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.hf_generate import HFChatModel
from training.taskworld import make_examples

pytestmark = pytest.mark.slow


def _strip_eos(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos)] if eos in ids else ids


def test_vllm_greedy_equals_transformers_greedy_on_20_prompts(embedded_base: Path,
                                                             monkeypatch) -> None:
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    # The engine in this process: two fewer processes importing torch and vLLM (~25 s).
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from vllm import LLM, SamplingParams

    # Mixed tasks: copy (which the base knows) and others (where it is wrong, but must be
    # wrong in exactly the same way in both engines).
    prompts = [ex.prompt for task in ("copy", "upper", "reverse", "persona")
               for ex in make_examples(task, "test", 5, seed=3)]
    reference = HFChatModel.load(embedded_base)
    expected = reference.generate_ids(prompts, max_new_tokens=64)
    rendered = [reference.render(p) for p in prompts]

    llm = LLM(model=str(embedded_base), dtype="float32", max_model_len=512, seed=0,
              enforce_eager=True)
    try:
        outs = llm.generate(rendered, SamplingParams(temperature=0.0, max_tokens=64))
        eos = reference.tokenizer.eos_token_id
        got = [_strip_eos(list(o.outputs[0].token_ids), eos) for o in outs]
        # One BOS, written by the template: vLLM must not add a second one.
        assert [t for t in outs[0].prompt_token_ids[:2]] == [reference.tokenizer.bos_token_id,
                                                             reference.tokenizer.convert_tokens_to_ids("<|user|>")]
    finally:
        del llm
    assert len(got) == 20
    mismatches = [(p, e, g) for p, e, g in zip(prompts, expected, got, strict=True) if e != g]
    assert not mismatches, mismatches[:3]
    # The comparison is not vacuous: the copy prompts really are copied.
    copied = reference.generate(prompts[:5], max_new_tokens=64)
    assert sum(c == ex.answer for c, ex in zip(copied, make_examples("copy", "test", 5, seed=3),
                                               strict=True)) >= 4
