"""`loraswap status` and `loraswap scale` against a single-process server (fake engine, real
uvicorn on loopback). The scaled-out side is in tests/server/test_scale_out.py."""

from __future__ import annotations

import json

import httpx
from click.testing import CliRunner
from inprocess import serve_on_loopback

from loraswap.cli import cli


def test_status_shows_the_one_engine_and_what_it_holds(inprocess, tiny_loras):
    parts = inprocess()
    with serve_on_loopback(parts.app) as url:
        r = httpx.post(f"{url}/admin/adapters", json={"name": "a0", "path": str(tiny_loras[0])})
        assert r.status_code == 201, r.text
        httpx.post(f"{url}/v1/chat/completions", json={
            "model": "a0", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})
        out = CliRunner().invoke(cli, ["status", "--url", url])
        assert out.exit_code == 0, out.output
        assert "one engine (single process)" in out.output and "a0@1" in out.output
        as_json = CliRunner().invoke(cli, ["status", "--url", url, "--json"])
        assert json.loads(as_json.output)["replicas"] is None


def test_scale_is_refused_by_a_single_process_server_with_the_reason(inprocess):
    parts = inprocess()
    with serve_on_loopback(parts.app) as url:
        out = CliRunner().invoke(cli, ["scale", "2", "--url", url])
        assert out.exit_code == 1
        assert "409" in out.output and "--replicas N" in out.output
        r = httpx.post(f"{url}/admin/engine/replicas", json={"replicas": 0})
        assert r.status_code == 400 and r.json()["error"]["param"]


def test_status_names_the_server_it_could_not_reach():
    out = CliRunner().invoke(cli, ["status", "--url", "http://127.0.0.1:9"])
    assert out.exit_code == 1 and "no server answered at http://127.0.0.1:9" in out.output
