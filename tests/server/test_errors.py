"""Bad input gets the right 4xx in the OpenAI error shape, and the engine keeps serving."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.slow


def chat(model: str, **kw) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "copy: abc"}], **kw}


def assert_good_request_works(server, base_id):
    r = httpx.post(server.v1 + "/chat/completions", json=chat(base_id, max_tokens=3), timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] >= 1


CASES = [
    # (name, route, body (dict or raw bytes), status, code, param)
    ("malformed json", "/v1/chat/completions", b'{"model": "x", "messages": [', 400,
     "invalid_json", None),
    ("messages wrong type", "/v1/chat/completions", {"model": "B", "messages": "hi"}, 400,
     "invalid_value", "messages"),
    ("max_tokens wrong type", "/v1/chat/completions", chat("B", max_tokens="ten"), 400,
     "invalid_value", "max_tokens"),
    ("temperature wrong type", "/v1/completions", {"model": "B", "prompt": "a",
                                                   "temperature": "hot"}, 400, "invalid_value",
     "temperature"),
    ("negative max_tokens", "/v1/chat/completions", chat("B", max_tokens=-5), 400,
     "invalid_value", "max_tokens"),
    ("huge max_tokens", "/v1/chat/completions", chat("B", max_tokens=10**9), 400,
     "context_length_exceeded", "max_tokens"),
    ("huge max_tokens (completions)", "/v1/completions", {"model": "B", "prompt": "a",
                                                          "max_tokens": 100000}, 400,
     "context_length_exceeded", "max_tokens"),
    ("prompt longer than the context", "/v1/chat/completions",
     {"model": "B", "messages": [{"role": "user", "content": "x" * 3000}]}, 400,
     "context_length_exceeded", "messages"),
    ("unknown model", "/v1/chat/completions", chat("no-such-model"), 404, "model_not_found",
     "model"),
    ("unknown version", "/v1/completions", {"model": "t0@99", "prompt": "a"}, 404,
     "model_not_found", "model"),
    ("n over the limit", "/v1/chat/completions", chat("B", n=1000, temperature=1), 400,
     "invalid_value", "n"),
    ("n>1 greedy", "/v1/chat/completions", chat("B", n=2, temperature=0), 400,
     "invalid_value", "n"),
    ("bad top_p", "/v1/completions", {"model": "B", "prompt": "a", "top_p": 0}, 400,
     "invalid_value", "top_p"),
    ("token id out of vocab", "/v1/completions", {"model": "B", "prompt": [1, 99999]}, 400,
     "invalid_value", "prompt"),
    ("empty messages", "/v1/chat/completions", {"model": "B", "messages": []}, 400,
     "invalid_value", "messages"),
]


@pytest.mark.parametrize("name,route,body,status,code,param", CASES, ids=[c[0] for c in CASES])
def test_bad_input(server, registered, base_id, name, route, body, status, code, param):
    if isinstance(body, dict):
        body = {**body, "model": base_id if body["model"] == "B" else body["model"]}
        r = httpx.post(server.url + route, json=body, timeout=60)
    else:
        r = httpx.post(server.url + route, content=body,
                       headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["code"] == code and err["param"] == param and err["message"]
    assert err["type"] == "invalid_request_error"
    assert_good_request_works(server, base_id)


def test_unknown_fields_refused_on_openai_routes(server, base_id):
    """Ignoring a field would break its client silently; honoured ones still pass."""
    r = httpx.post(server.v1 + "/chat/completions", timeout=60,
                   json=chat(base_id, max_tokens=2, frequency_penalty=0.5, foo={"bar": 1}))
    assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_parameter"
    assert r.json()["error"]["param"] == "foo"
    r = httpx.post(server.v1 + "/chat/completions", timeout=60,
                   json=chat(base_id, max_tokens=2, frequency_penalty=0.5))
    assert r.status_code == 200, r.text


def test_unknown_fields_refused_on_admin_routes(server, adapter_dirs):
    r = httpx.post(server.url + "/admin/adapters", timeout=60,
                   json={"name": "x", "path": str(adapter_dirs[0]), "colour": "red"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "unknown_parameter"
    assert r.json()["error"]["param"] == "colour"


def test_openai_client_raises_typed_errors(server, base_id):
    import openai

    client = server.client()
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="ghost@3", messages=[{"role": "user", "content": "a"}])
    assert exc.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=base_id, prompt="a", max_tokens=0)
