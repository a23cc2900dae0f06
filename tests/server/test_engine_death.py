"""When the engine process dies: /health and /ready answer 503, requests get a retryable 503
`engine_unavailable`, and the server exits with status 75 (EX_TEMPFAIL) for its supervisor to restart it."""

from __future__ import annotations

import signal
import time

import httpx
import psutil
import pytest

pytestmark = pytest.mark.slow


def engine_processes(pid: int) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            title = " ".join([child.name(), *child.cmdline()])
        except psutil.Error:
            continue
        if "EngineCore" in title or "VLLM" in title:
            found.append(child)
    return found


def test_killing_the_engine_gives_503s_then_exit_status_75(server, base_id):
    """On the shared server, last of the session (tests/server/conftest.py orders it)."""
    s = server
    try:
        body = {"model": base_id, "max_tokens": 2, "messages": [{"role": "user", "content": "x"}]}
        assert httpx.post(s.v1 + "/chat/completions", json=body, timeout=60).status_code == 200
        victims = engine_processes(s.proc.pid)
        assert victims, "no engine core process found under the server"
        for p in victims:
            p.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            health = httpx.get(s.url + "/health", timeout=5)
            if health.status_code == 503:
                break
            time.sleep(0.1)
        assert health.status_code == 503
        assert health.json()["error"]["code"] == "engine_unavailable"
        assert httpx.get(s.url + "/ready", timeout=5).status_code == 503
        r = httpx.post(s.v1 + "/chat/completions", json=body, timeout=30)
        assert r.status_code == 503 and r.json()["error"]["code"] == "engine_unavailable"
        assert r.headers["retry-after"] == "1"
        assert s.proc.wait(60) == 75
    finally:
        s.stop()
