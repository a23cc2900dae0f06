"""/health, /ready, /metrics (parsed with prometheus_client) and API keys on the live server."""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from server.auth import KeyStore

pytestmark = pytest.mark.slow


def scrape(server) -> dict[tuple[str, tuple], float]:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_health_ready(server):
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    assert httpx.get(server.url + "/ready").json()["status"] == "ready"


def test_metrics_count_requests(server, registered, base_id):
    before = scrape(server)
    client = server.client()
    generated = 0
    for _ in range(3):
        generated += client.chat.completions.create(
            model=registered[2], max_tokens=4, temperature=0,
            messages=[{"role": "user", "content": "hi"}]).usage.completion_tokens
    generated += client.completions.create(model=base_id, prompt="x",
                                           max_tokens=2).usage.completion_tokens
    after = scrape(server)

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert delta("loraswap_requests_total", route="/v1/chat/completions", status="200") == 3
    assert delta("loraswap_inference_requests_total", model=f"{registered[2]}@1",
                 endpoint="chat", stream="False") == 3
    assert delta("loraswap_inference_requests_total", model=base_id, endpoint="completions",
                 stream="False") == 1
    assert delta("loraswap_completion_tokens_total") == generated > 0
    assert delta("loraswap_request_latency_seconds_count", endpoint="chat") == 3
    assert after[("loraswap_requests_in_flight", ())] == 0
    assert after[("loraswap_loaded_adapters", ())] >= 1
    assert after[("loraswap_adapter_load_seconds_count", ())] >= 1


def eventually(check, timeout: float = 5.0) -> None:
    """Keys written by another process reach the server's key cache within one reconcile
    interval (0.5 s)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the server did not pick up the key change"
        time.sleep(0.05)


def test_api_keys(server, base_id):
    keys = KeyStore(server.home / "loraswap.db")
    body = {"model": base_id, "max_tokens": 2, "messages": [{"role": "user", "content": "a"}]}
    inference, inference_key = keys.create("app", "inference")
    admin, admin_key = keys.create("ops", "admin")
    try:
        assert "hash" not in inference and inference_key not in str(keys.list())
        eventually(lambda: httpx.post(server.v1 + "/chat/completions", json=body,
                                      timeout=60).status_code == 401)
        r = httpx.post(server.v1 + "/chat/completions", json=body, timeout=60)
        assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
        r = httpx.post(server.v1 + "/chat/completions", json=body, timeout=60,
                       headers={"Authorization": "Bearer lsk-wrong"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        ok = server.client(api_key=inference_key).chat.completions.create(**body)
        assert ok.choices
        r = httpx.get(server.url + "/admin/adapters", timeout=10,
                      headers={"Authorization": f"Bearer {inference_key}"})
        assert r.status_code == 403
        r = httpx.get(server.url + "/admin/adapters", timeout=10,
                      headers={"Authorization": f"Bearer {admin_key}"})
        assert r.status_code == 200
        assert server.client(api_key=admin_key).models.list().data
        assert httpx.get(server.url + "/health").status_code == 200  # no key needed
        keys.revoke(str(inference["id"]))
        eventually(lambda: httpx.post(server.v1 + "/chat/completions", json=body, timeout=60,
                                      headers={"Authorization": f"Bearer {inference_key}"}
                                      ).status_code == 401)
        r = httpx.post(server.v1 + "/chat/completions", json=body, timeout=60,
                       headers={"Authorization": f"Bearer {inference_key}"})
        assert r.status_code == 401
    finally:
        keys.revoke("app")
        keys.revoke("ops")
    eventually(lambda: httpx.post(server.v1 + "/chat/completions", json=body,
                                  timeout=60).status_code == 200)
    assert httpx.post(server.v1 + "/chat/completions", json=body, timeout=60).status_code == 200
