"""The scenarios beyond steady-state throughput: hot-swap and routing overhead.

Hot-swap: on an idle server, register a never-seen adapter and ask it for a token at once;
the clock runs from the registration call to the first streamed token. A second request
to the same adapter gives the warm TTFT. loraswap registers through `POST /admin/adapters`
(copy, sha256, validation, then lazy load on first use); vLLM through its development-only
`POST /v1/load_lora_adapter`.

Routing overhead: on the same loraswap server, alternate single-token requests that name the
adapter directly (c) and through its experiment alias (d, routed and logged), one at a time,
so the difference of the two latency distributions is what routing + logging cost.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import httpx

from benchmarks.loadgen import Target, send_one
from common.stats import quantile

__all__ = ["hot_swap", "routing_overhead"]


def _probe_body(model: str, max_tokens: int = 1, user: str | None = None) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": "copy: hello world"}],
            "max_tokens": max_tokens, "temperature": 0.0, "stream": True,
            "stream_options": {"include_usage": True}, "ignore_eos": True}
    if user:
        body["user"] = user
    return body


async def hot_swap(system: str, base_url: str, adapters: dict[str, Path]) -> list[dict]:
    """One trial per adapter: registration -> first token (cold), then a warm request."""
    target = Target(system, base_url, lambda i: "")
    trials = []
    async with httpx.AsyncClient(timeout=120) as client:
        for name, path in adapters.items():
            t0 = time.perf_counter()
            if system == "loraswap":
                resp = await client.post(f"{base_url}/admin/adapters",
                                         json={"path": str(path), "name": name})
                model = f"{name}@1" if resp.status_code == 201 else name
            else:
                resp = await client.post(f"{base_url}/v1/load_lora_adapter",
                                         json={"lora_name": name, "lora_path": str(path)})
                model = name
            registered = time.perf_counter() - t0
            if resp.status_code not in (200, 201):
                trials.append({"adapter": name, "error": f"register: HTTP {resp.status_code} "
                               f"{resp.text[:160]}"})
                continue
            cold = await send_one(client, target, _probe_body(model))
            warm = await send_one(client, target, _probe_body(model))
            if not (cold.ok and warm.ok):
                trials.append({"adapter": name, "error": cold.error or warm.error})
                continue
            trials.append({
                "adapter": name,
                "register_ms": round(registered * 1000, 2),
                "register_to_first_token_ms": round((cold.start + cold.ttft - t0) * 1000, 2),
                "cold_ttft_ms": round(cold.ttft * 1000, 2),
                "warm_ttft_ms": round(warm.ttft * 1000, 2),
            })
    return trials


async def routing_overhead(base_url: str, direct: str, alias: str, pairs: int) -> dict:
    """Alternating direct / alias single-token requests at concurrency 1 (after 5 warm pairs)."""
    target = Target("loraswap", base_url, lambda i: "")
    direct_ms: list[float] = []
    alias_ms: list[float] = []
    errors = 0
    async with httpx.AsyncClient(timeout=60) as client:
        for i in range(pairs + 5):
            order = [(direct, None, direct_ms), (alias, f"route-user-{i}", alias_ms)]
            if i % 2:
                order.reverse()
            for model, user, sink in order:
                out = await send_one(client, target, _probe_body(model, user=user))
                if not out.ok:
                    errors += 1
                elif i >= 5:
                    sink.append((out.end - out.start) * 1000)
    if not direct_ms or not alias_ms:
        return {"error": "no successful request pairs", "errors": errors}
    p50_d, p50_a = statistics.median(direct_ms), statistics.median(alias_ms)
    paired = [a - d for a, d in zip(alias_ms, direct_ms, strict=False)]
    return {
        "pairs": len(paired), "errors": errors,
        "direct_p50_ms": round(p50_d, 3), "alias_p50_ms": round(p50_a, 3),
        "direct_p95_ms": round(quantile(direct_ms, 0.95), 3),
        "alias_p95_ms": round(quantile(alias_ms, 0.95), 3),
        "overhead_p50_ms": round(p50_a - p50_d, 3),
        "paired_diff_median_ms": round(statistics.median(paired), 3),
    }
