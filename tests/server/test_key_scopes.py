"""What each key scope may call, table-driven, through the real app (fake engine, real SQLite)."""

from __future__ import annotations

import sqlite3

import pytest
from fastapi.testclient import TestClient

from server.auth import KeyStore, m001_api_keys

CHAT = {"model": "loraswap-base", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}
# (method, path, json) -> expected status per scope: inference, analyst, admin
TABLE = [
    ("GET", "/admin/experiments", None, (403, 200, 200)),
    ("GET", "/admin/experiments/bot", None, (403, 200, 200)),
    ("GET", "/admin/experiments/bot/results", None, (403, 200, 200)),
    ("GET", "/admin/experiments/bot/results.html", None, (403, 200, 200)),
    ("POST", "/admin/experiments/bot/pause", None, (403, 403, 200)),
    ("PUT", "/admin/experiments/bot/weights",
     {"variants": [{"ref": "support@1", "weight": 1}, {"ref": "support@2", "weight": 3}]},
     (403, 403, 200)),
    ("POST", "/admin/experiments", {"alias": "other", "variants": [
        {"ref": "support@1", "weight": 1}, {"ref": "support@2", "weight": 1}]}, (403, 403, 201)),
    ("DELETE", "/admin/experiments/other", None, (403, 403, 200)),  # the draft admin made above
    ("GET", "/admin/experiments/bot/export?format=kto", None, (403, 200, 200)),
    ("GET", "/admin/aliases", None, (403, 200, 200)),
    ("GET", "/admin/aliases/bot", None, (403, 200, 200)),
    ("GET", "/admin/aliases/bot/history", None, (403, 200, 200)),
    ("PUT", "/admin/aliases/bot/rules", {"rules": [
        {"when": {"users": ["vip"]}, "target": "support@2"}]}, (403, 403, 200)),
    ("PUT", "/admin/aliases/bot", {"target": "support@2"}, (403, 403, 200)),
    ("POST", "/admin/experiments/bot/promote", {"variant": "support@2"}, (403, 403, 200)),
    ("GET", "/admin/adapters", None, (403, 403, 200)),
    ("GET", "/admin/engine", None, (403, 403, 200)),
    ("POST", "/v1/chat/completions", CHAT, (200, 403, 200)),
    ("GET", "/v1/models", None, (200, 403, 200)),
]
SCOPES = ("inference", "analyst", "admin")


@pytest.fixture
def app_with_keys(inprocess, tiny_loras):
    parts = inprocess()
    tokens = {scope: parts.keys.create(f"k-{scope}", scope)[1] for scope in SCOPES}
    with TestClient(parts.app) as http:
        admin = {"Authorization": f"Bearer {tokens['admin']}"}
        for lora in tiny_loras[:2]:
            assert http.post("/admin/adapters", json={"name": "support", "path": str(lora)},
                             headers=admin).status_code == 201
        assert http.post("/admin/experiments", headers=admin, json={"alias": "bot", "variants": [
            {"ref": "support@1", "weight": 1}, {"ref": "support@2", "weight": 1}]}).status_code == 201
        assert http.post("/admin/experiments/bot/start", headers=admin).status_code == 200
        yield http, tokens


@pytest.mark.parametrize("scope_index,scope", list(enumerate(SCOPES)))
def test_each_scope_reaches_what_it_may_and_nothing_else(app_with_keys, scope_index, scope):
    http, tokens = app_with_keys
    headers = {"Authorization": f"Bearer {tokens[scope]}"}
    for method, path, body, expected in TABLE:
        want = expected[scope_index]
        r = http.request(method, path, json=body, headers=headers)
        assert r.status_code == want, f"{scope} {method} {path}: {r.status_code} {r.text[:200]}"
        if want == 403:
            err = r.json()["error"]
            assert err["type"] == "permission_error" and scope in err["message"]


def test_old_key_tables_gain_the_analyst_scope_and_keep_their_keys(tmp_path):
    from sqlite_utils import Database
    from sqlite_utils.migrations import Migrations

    db_path = tmp_path / "loraswap.db"
    shipped = Migrations("loraswap.server")  # the set as it shipped before m002
    shipped()(m001_api_keys)
    db = Database(sqlite3.connect(db_path))
    shipped.apply(db)
    db.execute("INSERT INTO api_keys (name, prefix, hash, scope, created_at) VALUES "
               "('app', 'lsk-abc', 'h1', 'inference', '2026-01-01T00:00:00Z')")
    db.conn.commit()
    with pytest.raises(sqlite3.IntegrityError):  # the old CHECK refuses the new scope
        db.execute("INSERT INTO api_keys (name, prefix, hash, scope, created_at) VALUES "
                   "('a', 'lsk-def', 'h2', 'analyst', '2026-01-01T00:00:00Z')")
    db.conn.close()
    store = KeyStore(db_path)
    assert [(k["name"], k["scope"]) for k in store.list()] == [("app", "inference")]
    row, token = store.create("analysts", "analyst")
    assert store.lookup(token) == (str(row["id"]), "analyst")
    with pytest.raises(ValueError, match="scope must be one of"):
        store.create("x", "superuser")
