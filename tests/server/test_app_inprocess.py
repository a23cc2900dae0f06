"""The OpenAI and admin routes in-process: the real app, a fake engine, the official client."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from openai import OpenAI


def openai_client(http: TestClient) -> OpenAI:
    return OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=http,
                  max_retries=0)


@pytest.fixture
def served(inprocess, tiny_loras):
    parts = inprocess()
    with TestClient(parts.app) as http:
        for i, path in enumerate(tiny_loras[:3]):
            r = http.post("/admin/adapters", json={"name": f"a{i}", "path": str(path)})
            assert r.status_code == 201, r.text
        yield parts, http


def test_chat_and_completions_name_the_version_served(served):
    parts, http = served
    client = openai_client(http)
    chat = client.chat.completions.create(model="a1", max_tokens=16,
                                          messages=[{"role": "user", "content": "hi"}])
    assert chat.model == "a1@1" and chat.choices[0].message.content == "[a1@1]"
    assert chat.choices[0].finish_reason == "stop" and chat.usage.completion_tokens == 6
    done = client.completions.create(model="loraswap-base", prompt="x", max_tokens=3)
    assert done.choices[0].text == "[ba" and done.choices[0].finish_reason == "length"
    raw = http.post("/v1/chat/completions", json={
        "model": "a0@1", "messages": [{"role": "user", "content": "x"}], "max_tokens": 16})
    assert raw.headers["x-loraswap-model"] == "a0@1"
    assert raw.headers["x-request-id"].startswith("req_")
    assert "token_ids" not in raw.json()["choices"][0]
    assert "prompt_token_ids" not in raw.json()


def test_return_token_ids_reports_the_rendered_prompt(served):
    """vLLM's extension: the ids the chat template rendered to, as the engine received them
    (the architecture matrix compares them with training's)."""
    from training.tokenizer import build_tokenizer  # the in-process app's tokenizer

    parts, http = served
    messages = [{"role": "user", "content": "copy: a b"}]
    chat = openai_client(http).chat.completions.create(
        model="a0", max_tokens=4, messages=messages, extra_body={"return_token_ids": True})
    ids = chat.model_extra["prompt_token_ids"]
    tok = build_tokenizer()
    assert ids == tok(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                      add_special_tokens=False)["input_ids"]
    assert len(ids) == chat.usage.prompt_tokens and chat.choices[0].model_extra["token_ids"]
    done = http.post("/v1/completions", json={"model": "a0", "prompt": "x y",
                                              "max_tokens": 2, "return_token_ids": True}).json()
    assert done["choices"][0]["prompt_token_ids"] == tok("x y")["input_ids"]
    assert done["choices"][0]["token_ids"]


def test_streams_are_typed_chunks_ending_in_done(served):
    parts, http = served
    client = openai_client(http)
    stream = client.chat.completions.create(
        model="a2", max_tokens=16, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "hi"}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "[a2@1]" and chunks[-1].usage.completion_tokens == 6
    assert all(c.model == "a2@1" for c in chunks)
    parts_ = list(client.completions.create(model="a0", prompt="x", max_tokens=16, stream=True))
    assert "".join(c.choices[0].text for c in parts_) == "[a0@1]"


def test_models_list_shows_ids_never_paths(served):
    parts, http = served
    models = openai_client(http).models.list()
    ids = [m.id for m in models.data]
    assert ids[:1] == ["loraswap-base"] and {"a0", "a0@1", "a1", "a2@1"} <= set(ids)
    text = json.dumps(http.get("/v1/models").json())
    assert str(parts.home) not in text and str(parts.registry.base_model_dir) not in text


def test_admin_view_is_store_relative_and_typed(served):
    parts, http = served
    view = http.get("/admin/adapters/a0@1").json()
    assert view["path"].startswith("a0/1-") and view["engine"]["state"] == "unloaded"
    assert "lineage" in view
    listed = http.get("/admin/adapters").json()["data"]
    assert {v["ref"] for v in listed} == {"a0@1", "a1@1", "a2@1"}
    assert all("lineage" not in v and not v["path"].startswith("/") for v in listed)
    spec = http.get("/openapi.json").json()
    chat = spec["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert "ChatCompletionResponse" in json.dumps(chat)
    assert "AdapterView" in json.dumps(spec["paths"]["/admin/adapters/{ref}"])


def test_registered_through_admin_is_servable_at_once(served, tiny_loras):
    parts, http = served
    r = http.post("/admin/adapters", json={"name": "fresh", "path": str(tiny_loras[4])})
    assert r.status_code == 201
    r = http.post("/v1/completions", json={"model": "fresh", "prompt": "x", "max_tokens": 16})
    assert r.status_code == 200 and r.json()["model"] == "fresh@1"


def test_registered_by_another_process_is_servable_after_one_reconcile(served, tiny_loras):
    import time

    from adapters import Registry

    parts, http = served
    other = Registry(parts.config.db_path, parts.config.store_dir, parts.config.base_model_dir,
                     max_rank=8)
    other.add(tiny_loras[5], "cli")
    other.close()
    deadline = time.monotonic() + 5 * parts.config.reconcile_interval + 2
    while time.monotonic() < deadline:
        r = http.post("/v1/completions", json={"model": "cli", "prompt": "x", "max_tokens": 16})
        if r.status_code == 200:
            break
        assert r.status_code == 404
        time.sleep(0.05)
    assert r.status_code == 200 and r.json()["model"] == "cli@1"


def test_archive_and_delete_leave_the_engine(served):
    parts, http = served
    assert http.post("/admin/adapters/a1@1/load").json()["engine"]["state"] == "loaded"
    assert "a1@1" in parts.engine.loaded.values()
    assert http.post("/admin/adapters/a1@1/archive").json()["status"] == "archived"
    assert "a1@1" not in parts.engine.loaded.values()
    r = http.post("/v1/completions", json={"model": "a1", "prompt": "x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert "archived" in r.json()["error"]["message"]
    assert http.delete("/admin/adapters/a2@1").status_code == 204
    r = http.post("/v1/completions", json={"model": "a2@1", "prompt": "x"})
    assert r.status_code == 404


def test_retrieve_one_model(served):
    parts, http = served
    client = openai_client(http)
    assert client.models.retrieve("a1@1").parent == "loraswap-base"
    assert client.models.retrieve("loraswap-base").id == "loraswap-base"
    r = http.get("/v1/models/nope@3")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_streamed_text_offsets_run_on_across_chunks(served):
    parts, http = served
    chunks = list(openai_client(http).completions.create(
        model="a0", prompt="pq", max_tokens=16, stream=True, logprobs=1, echo=True))
    offsets = [o for c in chunks if c.choices and c.choices[0].logprobs
               for o in c.choices[0].logprobs.text_offset]
    assert offsets == list(range(2, 2 + len("[a0@1]")))  # after the echoed "pq"


def test_multi_prompt_completions_run_concurrently(inprocess, tiny_loras):
    import time

    parts = inprocess(token_delay=0.05)
    with TestClient(parts.app) as http:
        started = time.monotonic()
        r = http.post("/v1/completions", json={"model": "loraswap-base", "max_tokens": 16,
                                               "prompt": ["a", "b", "c", "d"]})
        took = time.monotonic() - started
    assert r.status_code == 200 and [c["text"] for c in r.json()["choices"]] == ["[base]"] * 4
    assert took < 3 * 0.05 * len("[base]")  # one after another would take 4x one prompt


def test_every_prompt_and_choice_reaches_the_request_log(inprocess):
    import sqlite3

    parts = inprocess(log_all=True, retention=True)
    with TestClient(parts.app) as http:
        r = http.post("/v1/completions", json={"model": "loraswap-base", "max_tokens": 3,
                                               "prompt": ["a", "b"], "n": 2, "temperature": 1})
        assert r.status_code == 200 and len(r.json()["choices"]) == 4
        rid = r.headers["x-request-id"]
        parts.router.flush()
    row = sqlite3.connect(parts.config.db_path).execute(
        "SELECT prompt, output, outputs, completion_tokens FROM requests WHERE id = ?",
        [rid]).fetchone()
    assert json.loads(row[0]) == ["a", "b"] and row[1] == "[ba"
    assert json.loads(row[2]) == ["[ba"] * 4 and row[3] == 12


def test_a_prompt_variant_puts_its_system_prompt_before_the_request(served):
    """Chat: one system turn (joined with the client's own); completions: the text and a blank
    line before each prompt, BOS once. Checked on the ids the engine received."""
    from training.tokenizer import build_tokenizer

    parts, http = served
    prompt = "You answer in French."
    assert http.put("/admin/aliases/fr", json={"target": "base", "system_prompt": prompt}
                    ).status_code == 200
    tok = build_tokenizer()
    for own in ([], [{"role": "system", "content": "Be brief."}]):
        messages = [*own, {"role": "user", "content": "hello"}]
        body = {"model": "fr", "messages": messages, "max_tokens": 2, "return_token_ids": True}
        got = http.post("/v1/chat/completions", json=body).json()["prompt_token_ids"]
        system = prompt + ("\n\nBe brief." if own else "")
        expected = [{"role": "system", "content": system}, messages[-1]]
        assert got == tok(tok.apply_chat_template(expected, tokenize=False,
                                                  add_generation_prompt=True),
                          add_special_tokens=False)["input_ids"]
    done = http.post("/v1/completions", json={"model": "fr", "prompt": "x y", "max_tokens": 2,
                                              "return_token_ids": True}).json()
    assert done["choices"][0]["prompt_token_ids"] == tok(prompt + "\n\nx y")["input_ids"]
