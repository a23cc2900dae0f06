"""Acceptance through the real app under uvicorn on loopback (a fake engine that says which
adapter answered; everything else real)."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

import httpx
import pytest


def _chat(client: httpx.Client, model: str, user: str | None, text: str = "hi", **kw):
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    if user is not None:
        body["user"] = user
    return client.post("/v1/chat/completions", json=body, **kw)


def test_admin_api_life_cycle(live_server):
    with httpx.Client(base_url=live_server.url) as c:
        r = c.post("/admin/experiments", json={
            "alias": "bot", "variants": [{"ref": "support@1", "weight": 50},
                                         {"ref": "support@2", "weight": 50}]})
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "draft" and "salt" not in r.json()
        r = c.post("/admin/experiments", json={"alias": "bot", "variants": [], "extra": 1})
        assert r.status_code == 400
        r = c.post("/admin/experiments", json={
            "alias": "bot", "variants": [{"ref": "gone@9", "weight": 1},
                                         {"ref": "support@2", "weight": 1}]})
        assert r.status_code == 400 and "gone@9" in r.json()["error"]["message"]
        assert c.post("/admin/experiments/bot/start").json()["status"] == "running"
        r = c.post("/admin/experiments/bot/start")
        assert r.status_code == 409 and r.json()["error"]["code"] == "experiment_conflict"
        assert c.post("/admin/experiments/nope/start").status_code == 404
        r = c.put("/admin/experiments/bot/weights", json={
            "variants": [{"ref": "support@1", "weight": 80}, {"ref": "support@2", "weight": 20}]})
        assert r.status_code == 200 and r.json()["variants"][0]["weight"] == 80
        assert [e["name"] for e in c.get("/admin/experiments").json()["data"]] == ["bot"]
        assert c.post("/admin/experiments/bot/pause").json()["status"] == "paused"
        assert c.post("/admin/experiments/bot/stop").json()["status"] == "stopped"
        assert c.get("/admin/experiments/bot/results").json()["variants"][0]["requests"] == 0
        page = c.get("/admin/experiments/bot/results.html")
        assert page.status_code == 200 and "<svg" not in page.text and "No feedback yet" in page.text
        assert c.delete("/admin/experiments/bot").json()["deleted"] is True
        assert c.get("/admin/experiments/bot").status_code == 404


@pytest.mark.slow
def test_400_requests_from_100_users(live_server):
    rng = random.Random(7)
    with httpx.Client(base_url=live_server.url, timeout=30) as c:
        # A fixed salt: with a random one, 100 users split 50/50 trip the SRM check at
        # p < 0.001 about once in a thousand runs, by chance alone (49/51 with this one).
        c.post("/admin/experiments", json={
            "alias": "bot", "salt": "test-http-bot",
            "variants": [{"ref": "support@1", "weight": 50},
                         {"ref": "support@2", "weight": 50}]}).raise_for_status()
        c.post("/admin/experiments/bot/start").raise_for_status()
        seen: dict[str, set[str]] = defaultdict(set)
        ids: dict[str, list[str]] = defaultdict(list)
        users = [f"user-{i}" for i in range(100)]
        order = users * 4
        rng.shuffle(order)
        for n, user in enumerate(order):
            # half the users send the OpenAI `user` field, half the X-User-Id header
            if int(user.split("-")[1]) % 2:
                r = _chat(c, "bot", user)
            else:
                r = _chat(c, "bot", None, headers={"X-User-Id": user})
            assert r.status_code == 200
            variant = r.headers["X-Loraswap-Variant"]
            assert r.json()["model"] == variant
            assert r.json()["choices"][0]["message"]["content"] == f"[{variant}]"
            assert r.headers["X-Request-Id"].startswith("req_") and r.json()["id"].startswith("chatcmpl-")
            seen[user].add(variant)
            ids[variant].append(r.headers["X-Request-Id"])
            assert n < 400
        assert all(len(v) == 1 for v in seen.values()), "a user changed variant"
        sent = defaultdict(int)
        ups = defaultdict(int)
        for variant, rids in ids.items():
            for rid in rids[::2]:
                up = rng.random() < 0.6
                r = c.post("/v1/feedback", json={"request_id": rid, "thumb": "up" if up else "down"})
                assert r.status_code == 201, r.text
                sent[variant] += 1
                ups[variant] += up
        r = c.post("/v1/feedback", json={"request_id": "req_unknown", "thumb": "up"})
        assert r.status_code == 404 and "unknown request id" in r.json()["error"]["message"]
        r = c.post("/v1/feedback", json={"request_id": ids["support@1"][0], "score": 9})
        assert r.status_code == 400 and "declared range" in r.json()["error"]["message"]
        r = c.post("/v1/feedback", json={"request_id": ids["support@1"][0],
                                         "preferred_over": ids["support@1"][0]})
        assert r.status_code == 400
        res = c.get("/admin/experiments/bot/results").json()
    by_variant = {v["variant"]: v for v in res["variants"]}
    assert sum(v["requests"] for v in res["variants"]) == 400
    assert sum(v["users"] for v in res["variants"]) == 100
    for variant, rids in ids.items():
        assert by_variant[variant]["requests"] == len(rids)
        assert by_variant[variant]["feedback"] == sent[variant]
        assert by_variant[variant]["thumbs"]["positive"] == ups[variant]
    assert res["srm"]["flagged"] is False and res["srm"]["p_value"] > 0.001
    assert sum(res["srm"]["units"].values()) == 100


@pytest.mark.slow
def test_2000_feedback_posts_from_20_concurrent_clients_with_retries(live_server):
    router = live_server.router
    router.create(alias="bot", variants=[("support@1", 1), ("support@2", 1)])
    router.start("bot")
    with httpx.Client(base_url=live_server.url, timeout=30) as c:
        request_ids = [_chat(c, "bot", f"u{i}").headers["X-Request-Id"] for i in range(100)]

    async def client(worker: int, results: dict) -> None:
        rng = random.Random(worker)
        async with httpx.AsyncClient(base_url=live_server.url, timeout=60) as ac:
            for j in range(100):
                cid = f"fb-{worker}-{j}"
                body = {"request_id": request_ids[(worker * 100 + j) % 100],
                        "thumb": rng.choice(["up", "down"]), "client_id": cid}
                tries = 1 + (rng.random() < 0.3) + (rng.random() < 0.1)
                for _ in range(tries):  # a retry resends the identical body
                    r = await ac.post("/v1/feedback", json=body)
                    assert r.status_code in (200, 201), r.text
                    results[cid].append((r.status_code, r.json()["id"]))

    async def main() -> dict:
        results: dict = defaultdict(list)
        await asyncio.gather(*(client(w, results) for w in range(20)))
        return results

    results = asyncio.run(main())
    assert len(results) == 2000
    retried = 0
    for answers in results.values():
        assert answers[0][0] == 201
        assert all(code == 200 for code, _ in answers[1:])
        assert len({rid for _, rid in answers}) == 1
        retried += len(answers) > 1
    assert retried > 400
    rows = router._db.execute("SELECT COUNT(*), COUNT(DISTINCT client_id) FROM feedback").fetchone()
    assert rows == (2000, 2000)
