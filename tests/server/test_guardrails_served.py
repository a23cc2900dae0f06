"""A guardrail on the real server: an adapter that answers garbage is cut off by its users'
thumbs, automatically, and the alias goes on serving the control (the official client)."""

from __future__ import annotations

import time

import httpx
import pytest

from router.router import GUARDRAIL_CHECK_S

pytestmark = pytest.mark.slow

ALIAS = "guarded"
MIN_THUMBS = 10
PROMPTS = ["copy: the cat sat", "copy: blue sky", "copy: one two", "copy: red fox"]


def test_a_garbage_variant_is_cut_by_its_thumbs_and_the_alias_keeps_serving(server, registered):
    bad = f"{registered[0]}@1"  # random LoRA weights: it does not copy
    admin = httpx.Client(base_url=server.url, timeout=60)
    r = admin.post("/admin/experiments", json={
        "alias": ALIAS, "variants": [{"ref": "base", "weight": 1}, {"ref": bad, "weight": 1}],
        "guardrails": {"negative_rate": 0.5, "min_requests": MIN_THUMBS}})
    assert r.status_code == 201, r.text
    assert admin.post(f"/admin/experiments/{ALIAS}/start").status_code == 200
    client = server.client()
    try:
        bad_times, after_cut, cut_seen = [], [], False
        for i in range(400):  # ends 20 requests after the cut, whenever the cut comes
            prompt = PROMPTS[i % len(PROMPTS)]
            raw = client.chat.completions.with_raw_response.create(
                model=ALIAS, user=f"user{i}", temperature=0, max_tokens=16,
                messages=[{"role": "user", "content": prompt}])
            variant = raw.headers["X-Loraswap-Variant"]
            answer = raw.parse().choices[0].message.content.strip()
            good = answer == prompt.removeprefix("copy: ")  # the user checks the copy
            assert admin.post("/v1/feedback", json={
                "request_id": raw.headers["X-Request-Id"], "thumb": "up" if good else "down",
            }).status_code == 201
            if cut_seen:
                after_cut.append(variant)
            else:
                if variant == bad:
                    bad_times.append(time.monotonic())  # its thumb is acknowledged by now
                if admin.get(f"/admin/experiments/{ALIAS}").json()["cut"]:
                    # The cut is committed a moment before the router's in-memory table is
                    # swapped (same thread, right after): count only requests sent later.
                    cut_seen = True
                    time.sleep(0.2)
            if len(after_cut) == 20:
                break
        exp = admin.get(f"/admin/experiments/{ALIAS}").json()
        assert [c["variant"] for c in exp["cut"]] == [bad], exp
        assert "thumbs-down rate" in exp["cut"][0]["reason"]
        # Guardrails are checked every GUARDRAIL_CHECK_S (by the reconcile loop): requests keep
        # reaching the bad variant until the next check, as many as the machine serves
        # meanwhile. So the bound is in time: none later than two checks (and a second of
        # slack) after its 10th thumb.
        print(f"\nguardrail: cut after {len(bad_times)} requests to the bad variant "
              f"(min_requests {MIN_THUMBS}); reason: {exp['cut'][0]['reason']}")
        assert len(bad_times) >= MIN_THUMBS
        deadline = bad_times[MIN_THUMBS - 1] + 2 * GUARDRAIL_CHECK_S + 1.0
        assert [t for t in bad_times if t > deadline] == []
        assert after_cut == ["base"] * 20  # the alias serves the control, every request a 200
    finally:
        admin.post(f"/admin/experiments/{ALIAS}/stop")
