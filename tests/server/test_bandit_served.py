"""A bandit experiment through the app: the reconcile loop moves its weights toward the arm
users like, over HTTP only (fake engine, real SQLite, real router)."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient


def test_the_running_server_recomputes_bandit_weights(inprocess, tiny_loras):
    parts = inprocess(reconcile_interval=0.1)
    with TestClient(parts.app) as http:
        for lora in tiny_loras[:2]:
            assert http.post("/admin/adapters", json={"name": "support", "path": str(lora)}
                             ).status_code == 201
        r = http.post("/admin/experiments", json={
            "alias": "bot", "mode": "bandit", "min_share": 0.1, "bandit_interval_s": 0.2,
            "variants": [{"ref": "support@1", "weight": 1}, {"ref": "support@2", "weight": 1}]})
        assert r.status_code == 201, r.text
        assert (r.json()["mode"], r.json()["min_share"]) == ("bandit", 0.1)
        assert http.post("/admin/experiments/bot/start").status_code == 200
        seen: dict[str, str] = {}
        for i in range(60):
            chat = http.post("/v1/chat/completions", json={
                "model": "bot", "user": f"u{i}", "messages": [{"role": "user", "content": "hi"}]})
            assert chat.status_code == 200, chat.text
            variant = chat.headers["X-Loraswap-Variant"]
            seen[f"u{i}"] = variant
            thumb = "up" if variant == "support@2" else "down"
            assert http.post("/v1/feedback", json={"request_id": chat.headers["X-Request-Id"],
                                                   "thumb": thumb}).status_code == 201
        deadline = time.monotonic() + 20
        while True:
            exp = http.get("/admin/experiments/bot").json()
            weights = {v["ref"]: v["weight"] for v in exp["variants"]}
            if exp["weights_changed_at"] and weights["support@2"] > 8 * weights["support@1"]:
                break
            assert time.monotonic() < deadline, f"weights never moved: {exp}"
            time.sleep(0.1)
        for user, variant in seen.items():  # assigned users stay where they were
            chat = http.post("/v1/chat/completions", json={
                "model": "bot", "user": user, "messages": [{"role": "user", "content": "hi"}]})
            assert chat.headers["X-Loraswap-Variant"] == variant
