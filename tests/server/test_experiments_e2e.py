"""A/B experiments through the real server: alias routing, stickiness, logging, feedback, export.

The unit tests in tests/router prove the statistics on a stand-in; this drives the real engine
with the official `openai` client, as an application would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

ALIAS = "ab-chat"


def test_alias_is_sticky_logged_counted_and_exported(server, registered, base_id,
                                                     tmp_path: Path) -> None:
    a, b = f"{registered[0]}@1", f"{registered[1]}@1"
    admin = httpx.Client(base_url=server.url, timeout=60)
    r = admin.post("/admin/experiments", json={
        "alias": ALIAS, "retention": True,
        "variants": [{"ref": a, "weight": 50}, {"ref": b, "weight": 50}]})
    assert r.status_code == 201, r.text
    assert admin.post(f"/admin/experiments/{ALIAS}/start").status_code == 200

    client = server.client()
    assert ALIAS in {m.id for m in client.models.list().data}

    def one(user: int, i: int) -> tuple[int, str, str, str]:
        # Half the users are identified by the OpenAI `user` field, half by X-User-Id.
        kwargs = ({"user": f"u{user}"} if user < 50
                  else {"extra_headers": {"X-User-Id": f"u{user}"}})
        raw = client.chat.completions.with_raw_response.create(
            model=ALIAS, max_tokens=4, temperature=0,
            messages=[{"role": "user", "content": f"copy: user {user} asks {i}"}], **kwargs)
        body = raw.parse()
        return user, raw.headers["x-loraswap-variant"], body.model, raw.headers["x-request-id"]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda ui: one(*ui), [(u, i) for i in range(4) for u in range(100)]))
    assert len(answers) == 400

    variants_of: dict[int, set[str]] = defaultdict(set)
    for user, variant, model, _rid in answers:
        variants_of[user].add(variant)
        assert model == variant  # the response names the version actually served
    assert all(len(v) == 1 for v in variants_of.values()), "a user switched variants"
    per_variant = defaultdict(int)
    for _user, variant, _m, _rid in answers:
        per_variant[variant] += 1
    assert set(per_variant) == {a, b}

    # One thumb per user on their first request: up for even users, down for odd ones.
    first = {}
    for user, variant, _m, rid in answers:
        first.setdefault(user, (variant, rid))
    ups = defaultdict(int)
    downs = defaultdict(int)
    for user, (variant, rid) in first.items():
        thumb = "up" if user % 2 == 0 else "down"
        (ups if thumb == "up" else downs)[variant] += 1
        fb = httpx.post(server.v1 + "/feedback", json={"request_id": rid, "thumb": thumb,
                                                      "client_id": f"fb-{user}"}, timeout=30)
        assert fb.status_code == 201, fb.text
    retry = httpx.post(server.v1 + "/feedback", json={"request_id": first[0][1], "thumb": "up",
                                                     "client_id": "fb-0"}, timeout=30)
    assert retry.status_code == 200  # idempotent: the stored record comes back
    unknown = httpx.post(server.v1 + "/feedback", json={"request_id": "req_nope", "thumb": "up"},
                         timeout=30)
    assert unknown.status_code == 404 and "error" in unknown.json()

    results = admin.get(f"/admin/experiments/{ALIAS}/results").json()
    by_ref = {v["variant"]: v for v in results["variants"]}
    for ref in (a, b):
        assert by_ref[ref]["requests"] == per_variant[ref]
        assert by_ref[ref]["users"] == sum(1 for v in variants_of.values() if v == {ref})
        assert by_ref[ref]["feedback"] == ups[ref] + downs[ref]
    assert sum(v["requests"] for v in results["variants"]) == 400
    assert results["srm"]["flagged"] is False
    page = admin.get(f"/admin/experiments/{ALIAS}/results.html")
    assert page.status_code == 200 and "<svg" in page.text

    # Export the thumbs-up answers as SFT rows for the next version (retention was on).
    out = tmp_path / "sft.jsonl"
    env = {**os.environ, "LORASWAP_HOME": str(server.home), "LORASWAP_BASE_MODEL": str(server.base)}
    done = subprocess.run([sys.executable, "-m", "loraswap", "feedback", "export", "--experiment",
                           ALIAS, "--format", "sft", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == sum(ups.values())
    assert all(row["messages"][0]["content"].startswith("copy: user ") for row in rows)

    # Deleting a version a running experiment uses is refused; stopping it leaves the alias
    # serving its pointer (the control); deleting the alias ends it.
    refused = admin.delete(f"/admin/adapters/{a}")
    assert refused.status_code == 409, refused.text
    assert admin.post(f"/admin/experiments/{ALIAS}/stop").status_code == 200
    body = {"model": ALIAS, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    after = httpx.post(server.v1 + "/chat/completions", json=body, timeout=60)
    assert after.status_code == 200 and after.headers["X-Loraswap-Model"] == a
    assert "X-Loraswap-Experiment" not in after.headers
    assert admin.delete(f"/admin/aliases/{ALIAS}").status_code == 200
    gone = httpx.post(server.v1 + "/chat/completions", json=body, timeout=60)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "model_not_found"
