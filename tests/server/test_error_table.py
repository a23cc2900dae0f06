"""One error taxonomy: each error class answers with its status, type and code, through the
real app's handlers (no per-route translation left to disagree)."""

from __future__ import annotations

import os
import stat
import time

import pytest
from fastapi.testclient import TestClient

from server.errors import ERRORS, InvalidRequest, describe


def error(r) -> tuple[int, str, str]:
    body = r.json()["error"]
    return r.status_code, body["type"], body["code"]


@pytest.fixture
def app(inprocess, tiny_loras):
    parts = inprocess(max_upload_mib=1, log_all=True)
    with TestClient(parts.app) as http:
        for name, path in (("a", tiny_loras[0]), ("b", tiny_loras[1])):
            assert http.post("/admin/adapters", json={"name": name, "path": str(path)}
                             ).status_code == 201
        yield parts, http


def chat(http, model="a", **extra):
    return http.post("/v1/chat/completions", json={
        "model": model, "messages": [{"role": "user", "content": "x"}], "max_tokens": 4,
        **extra})


def test_400_for_invalid_values_everywhere(app):
    parts, http = app
    assert error(chat(http, temperature=5)) == (400, "invalid_request_error", "invalid_value")
    assert error(chat(http, max_tokens=10_000)) == (400, "invalid_request_error",
                                                    "context_length_exceeded")
    r = http.post("/v1/chat/completions", content=b"{nope", headers={"content-type":
                                                                     "application/json"})
    assert error(r) == (400, "invalid_request_error", "invalid_json")
    r = http.post("/admin/adapters", json={"name": "x", "path": "/nowhere", "typo": 1})
    assert error(r) == (400, "invalid_request_error", "unknown_parameter")
    r = http.post("/admin/adapters", json={"name": "x", "path": "/nowhere"})
    assert error(r) == (400, "invalid_request_error", "adapter_rejected")
    r = http.post("/admin/experiments", json={"alias": "bot", "variants": [
        {"ref": "gone@9", "weight": 1}, {"ref": "a@1", "weight": 1}]})
    assert error(r) == (400, "invalid_request_error", "invalid_experiment")
    rid = chat(http).headers["x-request-id"]
    r = http.post("/v1/feedback", json={"request_id": rid, "score": 99})
    assert error(r) == (400, "invalid_request_error", "invalid_feedback")  # was a 422


def test_404_for_anything_unknown(app):
    parts, http = app
    assert error(chat(http, model="nope")) == (404, "invalid_request_error", "model_not_found")
    assert error(http.get("/admin/adapters/nope")) == (404, "invalid_request_error", "not_found")
    assert error(http.get("/no/such/route")) == (404, "invalid_request_error", "not_found")
    assert error(http.get("/admin/experiments/nope")) == (404, "invalid_request_error",
                                                          "experiment_not_found")
    r = http.post("/v1/feedback", json={"request_id": "req_unknown", "thumb": "up"})
    assert error(r) == (404, "invalid_request_error", "request_not_found")


def test_409_conflicts_share_one_type(app):
    parts, http = app
    r = http.post("/admin/experiments", json={"alias": "bot", "variants": [
        {"ref": "a@1", "weight": 1}, {"ref": "b@1", "weight": 1}]})
    assert r.status_code == 201
    assert http.post("/admin/experiments/bot/start").status_code == 200
    assert error(http.post("/admin/experiments/bot/start")) == (409, "conflict_error",
                                                                "experiment_conflict")
    assert error(http.delete("/admin/adapters/a@1")) == (409, "conflict_error",
                                                         "adapter_in_use")
    rid = chat(http).headers["x-request-id"]
    first = http.post("/v1/feedback", json={"request_id": rid, "thumb": "up", "client_id": "c"})
    assert first.status_code == 201
    r = http.post("/v1/feedback", json={"request_id": rid, "thumb": "down", "client_id": "c"})
    assert error(r) == (409, "conflict_error", "client_id_reused")
    assert error(http.post("/admin/adapters/b@1/archive")) == (409, "conflict_error",
                                                               "adapter_in_use")  # a variant
    assert http.post("/admin/experiments/bot/stop").status_code == 200
    assert http.post("/admin/adapters/b@1/archive").status_code == 200
    assert error(http.post("/admin/adapters/b@1/load")) == (409, "conflict_error",
                                                           "adapter_not_active")
    view = http.get("/admin/adapters/a@1").json()
    weights = parts.config.store_dir / view["path"] / "adapter_model.safetensors"
    os.chmod(weights, os.stat(weights).st_mode | stat.S_IWUSR)
    weights.write_bytes(weights.read_bytes()[:-4] + b"\x00\x00\x80\x7f")
    # a@1 is resident: the reconcile loop re-hashes changed files and retires it; the next
    # request loads from disk, re-checks, and is refused.
    deadline = time.monotonic() + 10 * parts.config.reconcile_interval
    while chat(http, model="a@1").status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert error(chat(http, model="a@1")) == (409, "conflict_error", "adapter_tampered")
    assert "checksum" in chat(http, model="a@1").json()["error"]["message"]


def test_401_403_413_and_503(inprocess, tiny_loras):
    parts = inprocess(max_upload_mib=1, max_cpu_loras=1, adapter_wait_timeout=0.2,
                      token_delay=0.05)
    _, admin_key = parts.keys.create("ops", "admin")
    _, app_key = parts.keys.create("app", "inference")
    with TestClient(parts.app) as http:
        assert error(chat(http)) == (401, "authentication_error", "missing_api_key")
        assert error(http.get("/v1/models", headers={"Authorization": "Bearer lsk-wrong"})
                     ) == (401, "authentication_error", "invalid_api_key")
        user = {"Authorization": f"Bearer {app_key}"}
        admin = {"Authorization": f"Bearer {admin_key}"}
        assert error(http.get("/admin/adapters", headers=user)) == (403, "permission_error",
                                                                   "insufficient_scope")
        r = http.post("/admin/adapters/upload", params={"name": "big"}, headers=admin,
                      content=b"x" * (1024 * 1024 + 1))
        assert error(r) == (413, "invalid_request_error", "upload_too_large")
        for name, path in (("a", tiny_loras[0]), ("b", tiny_loras[1])):
            http.post("/admin/adapters", json={"name": name, "path": str(path)}, headers=admin)
        assert http.post("/admin/adapters/a@1/pin", headers=admin).status_code == 200
        r = http.post("/v1/completions", headers=user,
                      json={"model": "b", "prompt": "x", "max_tokens": 4})
        assert error(r) == (503, "service_unavailable", "adapter_capacity")


def test_every_class_in_the_table_has_one_row_and_client_errors_are_4xx():
    for cls, spec in ERRORS.items():
        assert 400 <= spec.status < 600 and spec.type and spec.code, cls
        if spec.status == 409:
            assert spec.type == "conflict_error", cls
    status, body = describe(InvalidRequest("bad", param="n", code="invalid_value"))
    assert status == 400 and body["error"] == {"message": "bad", "type": "invalid_request_error",
                                               "param": "n", "code": "invalid_value"}
    assert describe(RuntimeError("boom"))[0] == 500  # only our own bugs
