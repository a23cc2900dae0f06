"""The OpenAI routes through the official client: base, `name`, `name@version`; stream or not."""

from __future__ import annotations

import httpx
import pytest
from transformers import AutoTokenizer

pytestmark = pytest.mark.slow

PROMPT = "copy: the quick brown fox"


def chat_prompt_tokens(base, text: str) -> int:
    tok = AutoTokenizer.from_pretrained(str(base))
    rendered = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                       add_generation_prompt=True)
    ids = tok(rendered, add_special_tokens=False)["input_ids"]
    assert ids.count(tok.bos_token_id) == 1  # one BOS, from the template
    return len(ids)


def test_models_lists_base_versions_and_names(server, registered, base_id):
    models = {m.id: m for m in server.client().models.list().data}
    assert base_id in models
    for name in registered:
        assert name in models and f"{name}@1" in models
        assert models[f"{name}@1"].model_extra["parent"] == base_id
        assert models[name].model_extra["root"] == models[f"{name}@1"].model_extra["root"]
    assert models[base_id].model_extra["parent"] is None


@pytest.mark.parametrize("which", ["base", "name", "name@version"])
def test_chat_stream_equals_non_stream(server, registered, base_id, which):
    model = {"base": base_id, "name": registered[0], "name@version": f"{registered[0]}@1"}[which]
    client = server.client()
    kw = dict(model=model, messages=[{"role": "user", "content": PROMPT}], temperature=0,
              max_tokens=40)
    full = client.chat.completions.create(**kw)
    served = base_id if which == "base" else f"{registered[0]}@1"
    assert full.model == served
    text = full.choices[0].message.content
    assert text
    chunks = list(client.chat.completions.create(**kw, stream=True,
                                                 stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [full.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage == full.usage
    assert all(c.model == served for c in chunks)
    usage = full.usage
    assert usage.prompt_tokens == chat_prompt_tokens(server.base, PROMPT)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    if full.choices[0].finish_reason == "length":
        assert usage.completion_tokens == 40
    else:
        assert full.choices[0].finish_reason == "stop" and 0 < usage.completion_tokens <= 40


def test_adapters_change_outputs(server, registered, base_id):
    client = server.client()
    outs = {m: client.chat.completions.create(
        model=m, messages=[{"role": "user", "content": PROMPT}], temperature=0, max_tokens=24,
        extra_body={"return_token_ids": True}).choices[0].model_extra["token_ids"]
        for m in [base_id, *registered]}
    assert len({tuple(v) for v in outs.values()}) == len(outs), outs


@pytest.mark.parametrize("which", ["base", "name", "name@version"])
def test_completions_stream_equals_non_stream(server, registered, base_id, which):
    model = {"base": base_id, "name": registered[1], "name@version": f"{registered[1]}@1"}[which]
    client = server.client()
    kw = dict(model=model, prompt="hello world", temperature=0, max_tokens=12)
    full = client.completions.create(**kw)
    chunks = list(client.completions.create(**kw, stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == full.choices[0].text
    assert chunks[-1].usage == full.usage
    assert full.usage.prompt_tokens == len("hello world")  # byte-level tokenizer, no BOS added
    if full.choices[0].finish_reason == "length":
        assert full.usage.completion_tokens == 12
    else:  # EOS counts as a generated token, as with OpenAI
        assert full.choices[0].finish_reason == "stop" and full.usage.completion_tokens <= 12


def test_max_completion_tokens_n_seed_stop_user(server, registered, base_id):
    client = server.client()
    msgs = [{"role": "user", "content": PROMPT}]
    # ignore_eos: a random adapter may end its reply early; the cap is what is tested here
    r = client.chat.completions.create(model=registered[0], messages=msgs,
                                       max_completion_tokens=5, temperature=0, user="u42",
                                       extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 5 and r.choices[0].finish_reason == "length"
    kw = dict(model=base_id, messages=msgs, n=3, temperature=1.0, seed=7, max_tokens=10,
              extra_body={"return_token_ids": True})
    a = client.chat.completions.create(**kw)
    b = client.chat.completions.create(**kw)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert a.usage.completion_tokens == sum(len(c.model_extra["token_ids"]) for c in a.choices)
    greedy = client.chat.completions.create(model=base_id, messages=msgs, temperature=0,
                                            max_tokens=30).choices[0].message.content
    if len(greedy) > 3:
        stop = greedy[2:4]
        cut = client.chat.completions.create(model=base_id, messages=msgs, temperature=0,
                                             max_tokens=30, stop=[stop])
        assert cut.choices[0].finish_reason == "stop"
        assert cut.choices[0].message.content == greedy[: greedy.index(stop)]


def test_n_streaming_has_indices(server, base_id):
    chunks = list(server.client().chat.completions.create(
        model=base_id, messages=[{"role": "user", "content": PROMPT}], n=2, temperature=0.8,
        seed=1, max_tokens=8, stream=True))
    assert {c.choices[0].index for c in chunks if c.choices} == {0, 1}
    assert sum(1 for c in chunks if c.choices and c.choices[0].finish_reason) == 2


def test_logprobs(server, registered):
    client = server.client()
    r = client.chat.completions.create(model=registered[0], temperature=0, max_tokens=6,
                                       messages=[{"role": "user", "content": PROMPT}],
                                       logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 2
        # greedy: the chosen token is the most likely one
        assert entry.logprob >= max(t.logprob for t in entry.top_logprobs) - 1e-4
    c = client.completions.create(model=registered[0], prompt="hello", max_tokens=4,
                                  temperature=0, logprobs=1, extra_body={"ignore_eos": True})
    assert len(c.choices[0].logprobs.token_logprobs) == 4


def test_request_id_header(server, base_id):
    r = httpx.post(server.v1 + "/chat/completions", headers={"X-Request-Id": "abc-123"},
                   json={"model": base_id, "max_tokens": 2,
                         "messages": [{"role": "user", "content": "hi"}]}, timeout=60)
    # The server makes its own ids (they key the request log feedback refers to).
    assert r.status_code == 200 and r.headers["x-request-id"].startswith("req_")
    assert r.headers["x-request-id"] != "abc-123"
    r = httpx.get(server.v1 + "/models", timeout=10)
    assert r.headers["x-request-id"].startswith("req_")
