"""Each family of the architecture matrix, served by `loraswap serve --base-model <dir>`.

For every family: greedy token ids from the server equal transformers+peft's for the base
and three adapters in flight together with every LoRA slot full; an adapter trained by
`loraswap train sft` is registered and served the same way; and the server renders the chat
template to exactly the ids training puts before each reply.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from matrix_support import BASE_ID, MAX_LORAS, MAX_TOKENS, PROMPTS, Rig

from training.data import Row
from training.encoding import IGNORE, encode_row, render_prompt
from training.lora import linear_module_names

pytestmark = pytest.mark.slow

ROUNDS = 2


def _strip_eos(ids: list[int], eos: int) -> list[int]:
    return ids[:-1] if ids and ids[-1] == eos else ids


def _served_ids(rig: Rig, jobs: list[tuple[str, int]]) -> list[list[int]]:
    """Greedy reply ids for (model, prompt index) jobs, all in flight at once."""
    from openai import AsyncOpenAI

    eos = rig.tokenizer.eos_token_id

    async def one(client: AsyncOpenAI, model: str, i: int) -> list[int]:
        r = await client.chat.completions.create(
            model=model, temperature=0, max_tokens=MAX_TOKENS,
            messages=[{"role": "user", "content": PROMPTS[i]}],
            extra_body={"return_token_ids": True})
        assert r.model.split("@")[0] == model
        return _strip_eos(r.choices[0].model_extra["token_ids"], eos)

    async def run() -> list[list[int]]:
        async with AsyncOpenAI(base_url=rig.server.v1, api_key="unused", max_retries=0,
                               timeout=300) as client:
            return await asyncio.gather(*(one(client, m, i) for m, i in jobs))

    return asyncio.run(run())


def test_adapters_target_the_familys_own_module_names(rig: Rig) -> None:
    """peft's `all-linear` names (Phi-3: qkv_proj, gate_up_proj) are what the registry took."""
    from transformers import AutoModelForCausalLM

    expected = linear_module_names(AutoModelForCausalLM.from_pretrained(str(rig.base)))
    for name in [*rig.adapters, "sft"]:
        shown = httpx.get(f"{rig.server.url}/admin/adapters/{name}", timeout=30).json()
        assert shown["target_modules"] == expected, name


def test_greedy_parity_base_and_three_adapters_every_slot_full(rig: Rig) -> None:
    models = [BASE_ID, *rig.adapters]
    assert len(rig.adapters) == 3 and len(models) > MAX_LORAS  # (guard adapter + 3) > slots
    distinct = {tuple(map(tuple, rig.references[m])) for m in models}
    assert len(distinct) == len(models), "each adapter must change the greedy outputs"
    jobs = [(m, i) for _ in range(ROUNDS) for m in models for i in range(len(PROMPTS))]
    got = _served_ids(rig, jobs)
    wrong = [(m, i) for (m, i), ids in zip(jobs, got, strict=True)
             if ids != rig.references[m][i]]
    rig.timings["parity_equal"] = len(jobs) - len(wrong)
    rig.timings["parity_outputs"] = len(jobs)
    assert not wrong, f"{len(wrong)} of {len(jobs)} outputs differ: {wrong[:8]}"
    engine = httpx.get(rig.server.url + "/admin/engine", timeout=30).json()
    assert set(engine["loaded"]) >= {f"{n}@1" for n in rig.adapters}


def test_sft_trained_adapter_is_served_like_peft(rig: Rig) -> None:
    metrics = rig.sft["metrics"]
    assert metrics["steps"] >= 2 and rig.sft["registered"]["ref"] == "sft@1"
    assert rig.references["sft"] != rig.references[BASE_ID], "training changed nothing"
    got = _served_ids(rig, [("sft", i) for i in range(len(PROMPTS))])
    assert got == rig.references["sft"]


CONVERSATIONS = [
    [{"role": "user", "content": PROMPTS[1]}],
    [{"role": "user", "content": PROMPTS[6]}],
    [{"role": "system", "content": "Answer exactly."},
     {"role": "user", "content": PROMPTS[2]},
     {"role": "assistant", "content": "THE ANSWER, given before"},
     {"role": "user", "content": PROMPTS[4]}],
]


def _last_reply_start(labels: list[int]) -> int:
    """Where the last run of supervised tokens begins."""
    end = max(i for i, t in enumerate(labels) if t != IGNORE)
    start = end
    while start > 0 and labels[start - 1] != IGNORE:
        start -= 1
    return start


@pytest.mark.parametrize("conv", range(len(CONVERSATIONS)))
def test_training_and_serving_render_the_same_token_ids(rig: Rig, conv: int) -> None:
    tok = rig.tokenizer
    messages = CONVERSATIONS[conv]
    reply = "A reply, Écrit en UTF-8!"
    r = rig.client().chat.completions.create(model=BASE_ID, messages=messages, max_tokens=1,
                                             temperature=0, extra_body={"return_token_ids": True})
    served = r.model_extra["prompt_token_ids"]
    assert r.usage.prompt_tokens == len(served)
    ids, labels = encode_row(tok, Row("sft", {"messages": [
        *messages, {"role": "assistant", "content": reply}]}))
    start = _last_reply_start(labels)
    # The model is trained on exactly the prompt the server sends, then the reply and EOS.
    assert ids[:start] == served
    assert labels[start:] == ids[start:]
    assert tok.decode(labels[start:], skip_special_tokens=False).startswith(reply)
    assert tok.eos_token_id in labels[start:]
    # The template writes BOS once where the family has one; the tokenizer adds none.
    bos = tok.bos_token_id
    if bos is not None:
        assert served.count(bos) == 1 and served[0] == bos
    assert tok.decode(served, skip_special_tokens=False) == render_prompt(tok, messages)
