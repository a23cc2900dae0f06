"""Property-based fuzzing from our own OpenAPI schema (schemathesis): every route, valid and
invalid inputs, through the real app over the fake engine. No case may get a 5xx, and every
error body has OpenAI's shape."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.slow  # about a minute; needs no vLLM

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402

PER_OPERATION = 55  # per mode: well over 2,000 cases across the routes


def fuzz(op, mode, seen: dict, failures: list[str]) -> None:
    where = f"{op.method.upper()} {op.path} ({mode.value})"

    @settings(max_examples=PER_OPERATION, deadline=None, database=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case) -> None:
        seen["cases"] += 1
        response = case.call()
        if response.status_code >= 500:
            failures.append(f"{where}: {response.status_code} {response.text[:200]}")
        elif response.status_code >= 400:
            body = json.loads(response.text)
            assert set(body["error"]) == {"message", "type", "param", "code"}, where

    try:
        run()
    except Unsatisfiable:  # nothing to break: an operation without inputs has no negative case
        assert mode is GenerationMode.NEGATIVE, where


def test_no_generated_case_gets_a_server_error(inprocess, tiny_loras):
    parts = inprocess(log_all=True)
    seen = {"cases": 0}
    failures: list[str] = []
    with TestClient(parts.app) as http:  # runs the lifespan; schemathesis calls the same app
        assert http.post("/admin/adapters", json={"name": "a", "path": str(tiny_loras[0])}
                         ).status_code == 201
        schema = schemathesis.openapi.from_asgi("/openapi.json", parts.app)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 20
        for op in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                fuzz(op, mode, seen, failures)
        assert http.post("/v1/completions", json={"model": "a", "prompt": "x", "max_tokens": 16}
                         ).status_code == 200  # still serving
    print(f"schemathesis: {seen['cases']} cases over {len(operations)} operations")
    assert not failures, failures[:5]
    assert seen["cases"] >= 2000
