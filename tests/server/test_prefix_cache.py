"""Prefix caching (on by default) with adapters: two versions of one adapter, asked the same
long prompt in turns, each keep their own output. vLLM users report cached KV blocks shared
between different adapter contents under one name (docs/engine-notes.md#prefix-cache-across-
contents); every version we load gets its own engine name and id, so none can be reused."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.slow

# ~330 prompt tokens with the byte-level tokenizer: several KV blocks, so they get cached.
PROMPT = "copy: " + " ".join(["quiet river stone cloud green"] * 10)


def test_two_versions_of_one_name_never_share_cached_blocks(server, adapter_dirs, registered):
    for path in (adapter_dirs[0], adapter_dirs[2]):  # pc@1 = t0's files, pc@2 = t2's
        r = httpx.post(server.url + "/admin/adapters", json={"name": "pc", "path": str(path)},
                       timeout=60)
        assert r.status_code == 201, r.text
    client = server.client()

    def answer(model: str) -> str:
        out = client.chat.completions.create(model=model, max_tokens=16, temperature=0,
                                             messages=[{"role": "user", "content": PROMPT}])
        return out.choices[0].message.content

    seen = {"pc@1": set(), "pc@2": set()}
    for _ in range(3):  # alternate, so each version finds the other's blocks freshly cached
        for model in seen:
            seen[model].add(answer(model))
    assert len(seen["pc@1"]) == len(seen["pc@2"]) == 1
    assert seen["pc@1"] != seen["pc@2"]
    # and each is what the same files give under another name
    assert seen["pc@1"] == {answer(registered[0])} and seen["pc@2"] == {answer(registered[2])}
