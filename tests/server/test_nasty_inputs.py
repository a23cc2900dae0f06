"""A corpus of nasty inputs: each gets an OpenAI-shaped 4xx (never a 5xx, never a dropped
connection), and the server still answers a good request afterwards."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

GOOD = {"model": "loraswap-base", "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4}


def chat(**changes):
    return json.dumps({**GOOD, **changes})


RAW = "application/json"
CORPUS = [
    # (name, path, body bytes, content type, expected status, expected code or None)
    ("lone surrogate", "/v1/chat/completions",
     b'{"model":"loraswap-base","messages":[{"role":"user","content":"a\\ud800b"}]}', RAW,
     400, "invalid_string"),
    ("surrogate in prompt", "/v1/completions",
     b'{"model":"loraswap-base","prompt":"\\udfff"}', RAW, 400, "invalid_string"),
    ("seed past 64 bits", "/v1/chat/completions", chat(seed=2**70).encode(), RAW, 400, None),
    ("huge version", "/v1/chat/completions",
     chat(model="a@99999999999999999999").encode(), RAW, 404, "model_not_found"),
    ("image_url file part", "/v1/chat/completions", chat(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]).encode(), RAW,
     400, None),
    ("1000 tools", "/v1/chat/completions", chat(tools=[
        {"type": "function", "function": {"name": f"f{i}"}} for i in range(1000)]).encode(),
     RAW, 400, None),
    ("tool parameters not an object", "/v1/chat/completions", chat(tools=[
        {"type": "function", "function": {"name": "f", "parameters": [1]}}]).encode(), RAW, 400,
     None),
    ("tool arguments not JSON", "/v1/chat/completions", chat(messages=[
        {"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{nope"}}]},
        {"role": "tool", "tool_call_id": "c", "content": "1"}]).encode(), RAW, 400, None),
    ("10000 stops", "/v1/chat/completions", chat(stop=["x"] * 10_000).encode(), RAW, 400, None),
    ("5 stops", "/v1/chat/completions", chat(stop=list("abcde")).encode(), RAW, 400, None),
    ("user without content", "/v1/chat/completions",
     chat(messages=[{"role": "user"}]).encode(), RAW, 400, None),
    ("NaN", "/v1/chat/completions",
     chat().replace('"max_tokens": 4', '"temperature": NaN').encode(), RAW, 400, None),
    ("Infinity", "/v1/chat/completions",
     chat().replace('"max_tokens": 4', '"top_p": Infinity').encode(), RAW, 400, None),
    ("deep nesting", "/v1/chat/completions",
     ('{"model":"loraswap-base","messages":' + "[" * 5000 + "]" * 5000 + "}").encode(), RAW,
     400, None),
    ("10 MB body", "/v1/chat/completions",
     chat(messages=[{"role": "user", "content": "x" * 10_000_000}]).encode(), RAW, 413, None),
    ("wrong content type", "/v1/chat/completions", b"model=loraswap-base",
     "application/x-www-form-urlencoded", 400, None),
    ("not UTF-8", "/v1/chat/completions", b'{"model":"\xff\xfe"}', RAW, 400, None),
    ("not JSON", "/v1/chat/completions", b"{nope", RAW, 400, "invalid_json"),
    ("JSON but an array", "/v1/chat/completions", b"[1,2]", RAW, 400, None),
    ("token ids outside the vocabulary", "/v1/completions",
     json.dumps({"model": "loraswap-base", "prompt": [1, 10**9]}).encode(), RAW, 400, None),
    ("negative token id", "/v1/completions",
     json.dumps({"model": "loraswap-base", "prompt": [-5]}).encode(), RAW, 400, None),
    ("negative max_tokens", "/v1/chat/completions", chat(max_tokens=-1).encode(), RAW, 400,
     None),
    ("huge max_tokens", "/v1/chat/completions", chat(max_tokens=2**70).encode(), RAW, 400,
     None),
    ("huge n", "/v1/chat/completions", chat(n=10**9, temperature=1).encode(), RAW, 400, None),
    ("huge top_logprobs", "/v1/chat/completions",
     chat(logprobs=True, top_logprobs=10**6).encode(), RAW, 400, None),
    ("absurd stop string", "/v1/chat/completions", chat(stop=["x" * 100_000]).encode(), RAW,
     400, None),
    ("unknown field", "/v1/chat/completions", chat(frobnicate=1).encode(), RAW, 400,
     "unknown_parameter"),
    ("unsupported OpenAI field", "/v1/chat/completions", chat(audio={"voice": "x"}).encode(),
     RAW, 400, "unsupported_parameter"),
    ("deprecated functions", "/v1/chat/completions", chat(functions=[{"name": "f"}]).encode(),
     RAW, 400, "unsupported_parameter"),
    ("logit_bias out of range", "/v1/chat/completions", chat(logit_bias={"5": 1000}).encode(),
     RAW, 400, None),
    ("logit_bias key not a token", "/v1/chat/completions",
     chat(logit_bias={"banana": 1}).encode(), RAW, 400, None),
    ("logit_bias id outside the vocabulary", "/v1/chat/completions",
     chat(logit_bias={"99999999": 1}).encode(), RAW, 400, None),
    ("surrogate in admin body", "/admin/adapters",
     b'{"name":"\\ud800","path":"/x"}', RAW, 400, None),
    ("unknown model on admin", "/admin/adapters/%ED%A0%80", None, RAW, 404, None),
]


@pytest.fixture(scope="module")
def http(tmp_path_factory, tiny_base):
    from inprocess import build

    parts = build(tmp_path_factory.mktemp("nasty"), tiny_base)
    with TestClient(parts.app, raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize(("name", "path", "body", "ctype", "status", "code"), CORPUS,
                         ids=[c[0] for c in CORPUS])
def test_nasty_input_gets_an_openai_shaped_4xx(http, name, path, body, ctype, status, code):
    if body is None:
        r = http.get(path)
    else:
        r = http.post(path, content=body, headers={"content-type": ctype})
    assert r.status_code == status, (name, r.status_code, r.text[:300])
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if code is not None:
        assert err["code"] == code, err
    ok = http.post("/v1/chat/completions", json=GOOD)
    assert ok.status_code == 200, ok.text


def test_noop_values_of_unsupported_fields_are_accepted(http):
    r = http.post("/v1/chat/completions", json={
        **GOOD, "store": False, "tool_choice": "none", "modalities": ["text"],
        "service_tier": "auto", "response_format": {"type": "text"}, "parallel_tool_calls": True})
    assert r.status_code == 200, r.text


def test_refusals_name_the_field(http):
    r = http.post("/v1/chat/completions", json={**GOOD, "tools": [{"type": "function"}]})
    assert r.json()["error"]["param"] == "tools.0.function"
    assert "tools.0.function" in r.json()["error"]["message"]
    r = http.post("/v1/chat/completions", json={**GOOD, "frobnicate": 1})
    assert r.json()["error"]["param"] == "frobnicate"
