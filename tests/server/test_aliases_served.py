"""Aliases on the real server, through the official client: routing rules table-driven, a
prompt variant's system prompt reaching the engine, and an experiment that promotes its
winner by itself, after which the alias serves the winner (never a 404)."""

from __future__ import annotations

import time

import httpx
import pytest

from router.assignment import bucket_of

pytestmark = pytest.mark.slow

ALIAS = "desk"
HELLO = [{"role": "user", "content": "copy: hello"}]


def _user_in_first_half() -> str:
    return next(u for u in (f"user{i}" for i in range(100)) if bucket_of(f"rule:{ALIAS}", u) < 5000)


def _user_in_second_half() -> str:
    return next(u for u in (f"user{i}" for i in range(100)) if bucket_of(f"rule:{ALIAS}", u) >= 5000)


def test_routing_rules_table_through_the_real_server(server, registered, base_id):
    t0, t1, t2, t3 = (f"{name}@1" for name in registered)
    admin = httpx.Client(base_url=server.url, timeout=60)
    r = admin.put(f"/admin/aliases/{ALIAS}", json={"target": registered[1]})
    assert r.status_code == 200 and r.json()["target"] == t1, r.text
    r = admin.put(f"/admin/aliases/{ALIAS}/rules", json={"rules": [
        {"name": "acme", "when": {"header": {"X-Tenant": "acme"}}, "target": t2},
        {"name": "gold", "when": {"metadata": {"tier": "gold"}}, "target": t3},
        {"name": "vip", "when": {"users": ["vip"]}, "target": "base"},
        {"name": "translate", "when": {"prompt_regex": "^translate"}, "target": "base",
         "system_prompt": "You are a careful translator. Keep the meaning."},
        {"name": "half", "when": {"user_hash": [0, 0.5]}, "target": t0}]})
    assert r.status_code == 200, r.text
    bad = admin.put(f"/admin/aliases/{ALIAS}/rules", json={"rules": [
        {"when": {"prompt_regex": "(oops"}, "target": t0}]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "rules[0].when.prompt_regex"
    assert len(admin.get(f"/admin/aliases/{ALIAS}").json()["rules"]) == 5  # unchanged

    low, high = _user_in_first_half(), _user_in_second_half()
    translate = [{"role": "user", "content": "translate: hello"}]
    # (request options, messages) -> (X-Loraswap-Rule or None, X-Loraswap-Model)
    table = [
        ({"user": high, "extra_headers": {"X-Tenant": "acme"}}, HELLO, ("acme", t2)),
        ({"user": high, "metadata": {"tier": "gold"}}, HELLO, ("gold", t3)),
        ({"user": "vip", "metadata": {"tier": "free"}}, HELLO, ("vip", base_id)),
        ({"user": high}, translate, ("translate", base_id)),
        ({"user": low}, HELLO, ("half", t0)),
        ({"user": high}, HELLO, (None, t1)),
        ({}, HELLO, (None, t1)),
    ]
    client = server.client()
    for options, messages, (rule, model) in table:
        raw = client.chat.completions.with_raw_response.create(
            model=ALIAS, messages=messages, max_tokens=2, temperature=0, **options)
        assert (raw.headers.get("X-Loraswap-Rule"), raw.headers["X-Loraswap-Model"]) == \
            (rule, model), options
        assert "X-Loraswap-Experiment" not in raw.headers
        assert raw.parse().model == model
    # The rule's system prompt reached the engine: more prompt tokens than the bare request.
    ruled = client.chat.completions.create(model=ALIAS, messages=translate, max_tokens=1,
                                           user=high)
    bare = client.chat.completions.create(model=base_id, messages=translate, max_tokens=1)
    assert ruled.usage.prompt_tokens > bare.usage.prompt_tokens + 5
    # A request served by a rule is logged: feedback on it is accepted.
    assert admin.post("/v1/feedback", json={
        "request_id": raw.headers["X-Request-Id"], "thumb": "up"}).status_code == 201
    models = {m.id for m in client.models.list().data}
    assert ALIAS in models
    # Its rules hold t0, t2 and t3 against archiving: gone with the alias, for later tests.
    assert admin.delete(f"/admin/aliases/{ALIAS}").status_code == 200


def test_an_auto_promote_experiment_ends_with_its_winner_on_the_alias(server, registered,
                                                                     base_id):
    """Control: an adapter with random weights (it does not copy); variant: the base (it
    does). Users thumb the copy, one in seven wrongly; the server promotes once decided."""
    alias, bad = "copier", f"{registered[0]}@1"
    admin = httpx.Client(base_url=server.url, timeout=60)
    r = admin.post("/admin/experiments", json={
        "alias": alias, "auto_promote": True,
        "variants": [{"ref": bad, "weight": 1}, {"ref": "base", "weight": 1}]})
    assert r.status_code == 201, r.text
    assert admin.post(f"/admin/experiments/{alias}/start").status_code == 200
    client = server.client()
    prompts = ["copy: the cat sat", "copy: blue sky", "copy: one two", "copy: red fox"]
    status, users = "running", 0
    for i in range(200):
        prompt = prompts[i % len(prompts)]
        raw = client.chat.completions.with_raw_response.create(
            model=alias, user=f"p{i}", temperature=0, max_tokens=12,
            messages=[{"role": "user", "content": prompt}])
        good = raw.parse().choices[0].message.content.strip() == prompt.removeprefix("copy: ")
        if i % 7 == 3:
            good = not good  # noisy users
        if "X-Loraswap-Experiment" in raw.headers:
            users += 1
            assert admin.post("/v1/feedback", json={
                "request_id": raw.headers["X-Request-Id"], "thumb": "up" if good else "down",
            }).status_code == 201
        status = admin.get(f"/admin/experiments/{alias}").json()["status"]
        if status == "stopped":
            break
    assert status == "stopped", "the sequential test never decided"
    print(f"\nauto-promote: decided after {users} users")
    time.sleep(0.2)  # the table swap follows the commit in the same thread
    for i in range(5):
        raw = client.chat.completions.with_raw_response.create(
            model=alias, user=f"after{i}", messages=HELLO, max_tokens=2)
        assert raw.headers["X-Loraswap-Model"] == base_id  # the winner, for everyone
        assert "X-Loraswap-Experiment" not in raw.headers
    history = admin.get(f"/admin/aliases/{alias}/history").json()["data"]
    assert [h["kind"] for h in history] == ["set", "experiment-start", "promote"]
    assert (history[0]["to"], history[2]["from"], history[2]["to"]) == (
        bad, f"experiment:{alias}", "base")
    assert "automatically" in history[2]["reason"] and "variant-wins" in history[2]["reason"]
    results = admin.get(f"/admin/experiments/{alias}/results").json()
    assert results["decisions"] == {"base": "variant-wins"}
