"""A client that goes away, streaming or not, aborts its engine request: the engine's count
of running requests drops long before the answer would have been finished."""

from __future__ import annotations

import time

import httpx
import pytest

pytestmark = pytest.mark.slow

BODY = {"max_tokens": 480, "ignore_eos": True, "temperature": 1.0, "n": 4,
        "messages": [{"role": "user", "content": "copy: long"}]}


def running(server) -> int:
    return httpx.get(server.url + "/admin/engine", timeout=10).json()["running_requests"]


def seconds_until_idle(server, limit: float) -> float:
    started = time.monotonic()
    while running(server) and time.monotonic() - started < limit:
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.fixture(scope="module")
def full_seconds(server, base_id) -> float:
    started = time.monotonic()
    r = httpx.post(server.v1 + "/chat/completions", json={**BODY, "model": base_id}, timeout=300)
    assert r.status_code == 200
    return time.monotonic() - started


def test_a_non_streamed_request_is_aborted_when_the_client_leaves(server, base_id, full_seconds):
    assert running(server) == 0
    with pytest.raises(httpx.TimeoutException):
        httpx.post(server.v1 + "/chat/completions", json={**BODY, "model": base_id},
                   timeout=0.5)
    assert seconds_until_idle(server, full_seconds) < full_seconds / 2


def test_a_stream_is_aborted_when_the_client_leaves(server, base_id, full_seconds):
    with httpx.stream("POST", server.v1 + "/chat/completions", timeout=60,
                      json={**BODY, "model": base_id, "stream": True}) as r:
        lines = r.iter_lines()
        for _ in range(5):
            next(lines)
        assert running(server) >= 1
    assert seconds_until_idle(server, full_seconds) < full_seconds / 2
