"""The admin API: register (path, upload), list, show, load/unload/pin, archive, delete;
refusal of tampered versions; versions archived by another process leave the engine."""

from __future__ import annotations

import io
import tarfile
import time

import httpx
import pytest

from adapters import Registry

pytestmark = pytest.mark.slow


def admin(server, method: str, path: str, **kw) -> httpx.Response:
    return httpx.request(method, server.url + "/admin" + path, timeout=120, **kw)


def engine_loaded(server) -> list[str]:
    return admin(server, "GET", "/engine").json()["loaded"]


def complete(server, model: str) -> httpx.Response:
    return httpx.post(server.v1 + "/completions", timeout=60,
                      json={"model": model, "prompt": "abc", "max_tokens": 3, "temperature": 0})


def test_lifecycle(server, registered, adapter_dirs):
    r = admin(server, "POST", "/adapters", json={"name": "life", "path": str(adapter_dirs[1])})
    assert r.status_code == 201 and r.json()["ref"] == "life@1"
    r = admin(server, "POST", "/adapters", json={"name": "life", "path": str(adapter_dirs[2]),
                                                  "description": "second", "load": True})
    assert r.json()["ref"] == "life@2" and r.json()["engine"]["loaded"] is True
    assert "life@2" in engine_loaded(server)
    listed = {a["ref"] for a in admin(server, "GET", "/adapters").json()["data"]}
    assert {"life@1", "life@2"} <= listed
    assert admin(server, "GET", "/adapters/life").json()["ref"] == "life@2"
    assert complete(server, "life").json()["model"] == "life@2"

    assert admin(server, "POST", "/adapters/life@2/pin").json()["engine"]["pinned"] is True
    assert admin(server, "POST", "/adapters/life@2/pin",
                 json={"pinned": False}).json()["engine"]["pinned"] is False
    assert admin(server, "POST", "/adapters/life@2/unload").json()["engine"]["loaded"] is False
    assert "life@2" not in engine_loaded(server)
    assert admin(server, "POST", "/adapters/life@1/load").json()["engine"]["loaded"] is True

    r = admin(server, "POST", "/adapters/life@2/archive")
    assert r.json()["status"] == "archived"
    assert complete(server, "life").json()["model"] == "life@1"  # latest active
    assert complete(server, "life@2").status_code == 404
    assert admin(server, "DELETE", "/adapters/life@1").status_code == 204
    assert "life@1" not in engine_loaded(server)
    r = complete(server, "life")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert admin(server, "GET", "/adapters/nope").status_code == 404


def test_upload_archive(server, adapter_dirs):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for f in adapter_dirs[3].iterdir():
            tar.add(f, arcname=f.name)
    r = admin(server, "POST", "/adapters/upload", params={"name": "uploaded"},
              content=buf.getvalue(), headers={"content-type": "application/gzip"})
    assert r.status_code == 201, r.text
    assert complete(server, "uploaded@1").status_code == 200
    r = admin(server, "POST", "/adapters/upload", params={"name": "junk"}, content=b"not a tar")
    assert r.status_code == 400 and r.json()["error"]["code"] == "adapter_rejected"


def test_tampered_version_is_refused(server, adapter_dirs):
    r = admin(server, "POST", "/adapters", json={"name": "tamper", "path": str(adapter_dirs[0])})
    path = r.json()["path"]
    assert not path.startswith("/")  # relative to the server's store
    weights = f"{server.home / 'store' / path}/adapter_model.safetensors"
    import os
    import stat

    os.chmod(weights, os.stat(weights).st_mode | stat.S_IWUSR)
    data = bytearray(open(weights, "rb").read())
    data[-8:] = b"\x00\x00\x80\x7f" * 2  # last float becomes inf
    open(weights, "wb").write(bytes(data))
    for model in ("tamper", "tamper@1"):
        r = complete(server, model)
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "adapter_tampered"
        assert "checksum" in r.json()["error"]["message"]
    assert "tamper@1" not in engine_loaded(server)
    assert complete(server, "loraswap-base").status_code == 200


def test_archived_elsewhere_leaves_the_engine(server, adapter_dirs):
    admin(server, "POST", "/adapters", json={"name": "cli-arch", "path": str(adapter_dirs[2]),
                                              "load": True})
    assert "cli-arch@1" in engine_loaded(server)
    reg = Registry(server.home / "loraswap.db", server.home / "store", server.base)
    reg.archive("cli-arch@1")  # as `loraswap adapters archive` would, from another process
    reg.close()
    deadline = time.monotonic() + 3
    while "cli-arch@1" in engine_loaded(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "cli-arch@1" not in engine_loaded(server)
    ids = admin(server, "GET", "/engine").json()["engine_ids"]
    loaded = engine_loaded(server)
    assert len(ids) == len(loaded)  # the engine's own set matches ours: memory freed


def test_concurrent_first_requests_load_once(server, adapter_dirs):
    import asyncio

    def loads() -> float:
        for line in httpx.get(server.url + "/metrics", timeout=10).text.splitlines():
            if line.startswith("loraswap_adapter_loads_total "):
                return float(line.split()[1])
        raise AssertionError("no loraswap_adapter_loads_total")

    admin(server, "POST", "/adapters", json={"name": "burst", "path": str(adapter_dirs[3])})
    before = loads()

    async def burst():
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as c:
            return await asyncio.gather(*(c.post("/v1/completions", json={
                "model": "burst", "prompt": "abc", "max_tokens": 2}) for _ in range(8)))

    assert all(r.status_code == 200 for r in asyncio.run(burst()))
    assert loads() - before == 1
