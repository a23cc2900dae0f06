"""The load generator: streaming OpenAI chat requests over httpx, timed per token.

One client drives every system, so its own overhead (it shares the machine's cores with the
server) is the same for all of them. TTFT is the time to the first chunk with content; ITL is
the gap between content chunks; tokens come from the server's `usage` (stream_options).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx

from benchmarks.workload import Request
from common.stats import quantile

__all__ = ["Outcome", "Target", "run_load", "send_one", "summarize"]


@dataclass(frozen=True)
class Target:
    """How one system is asked: its base URL and the request body for a workload request."""

    name: str
    base_url: str
    model_for: Callable[[int], str]  # adapter index -> the `model` field
    extra: dict = field(default_factory=dict)  # more body fields (e.g. user)
    user_per_request: bool = False  # a fresh `user` per request (experiment units)


@dataclass
class Outcome:
    ok: bool
    start: float
    end: float
    ttft: float | None = None
    tokens: int = 0
    times: list[float] = field(default_factory=list)  # arrival of each content chunk
    error: str | None = None
    adapter: int | None = None  # the request's adapter index (0 = the most popular)
    # finished normally with tokens that all decode to nothing (e.g. a random benchmark
    # adapter emitting only end-of-sequence tokens under ignore_eos): a success without a TTFT
    invisible: bool = False

    @property
    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.times, self.times[1:], strict=False)]


def body_for(target: Target, req: Request, serial: int) -> dict:
    body = {
        "model": target.model_for(req.adapter),
        "messages": [{"role": "user", "content": req.prompt}],
        "max_tokens": req.max_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,  # every system generates exactly max_tokens: the same work
        **target.extra,
    }
    if target.user_per_request:
        body["user"] = f"bench-user-{serial}"
    return body


async def send_one(client: httpx.AsyncClient, target: Target, body: dict) -> Outcome:
    start = time.perf_counter()
    out = Outcome(ok=False, start=start, end=start)
    finished = False
    try:
        async with client.stream("POST", f"{target.base_url}/v1/chat/completions",
                                 json=body) as resp:
            if resp.status_code != 200:
                text = (await resp.aread()).decode(errors="replace")
                out.error = f"HTTP {resp.status_code}: {text[:160]}"
                return out
            async for line in resp.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    out.error = f"stream error: {str(chunk['error'])[:160]}"
                    return out
                if chunk.get("usage"):
                    out.tokens = int(chunk["usage"].get("completion_tokens") or 0)
                for choice in chunk.get("choices") or ():
                    finished = finished or bool(choice.get("finish_reason"))
                    if (choice.get("delta") or {}).get("content"):
                        now = time.perf_counter()
                        if not out.times:
                            out.ttft = now - start
                        out.times.append(now)
        out.tokens = out.tokens or len(out.times)
        out.invisible = out.ttft is None and finished and out.tokens > 0
        out.ok = out.ttft is not None or out.invisible
        if not out.ok:
            out.error = "no content streamed"
    except (httpx.HTTPError, json.JSONDecodeError, OSError) as exc:
        out.error = f"{exc.__class__.__name__}: {str(exc)[:160]}"
    finally:
        out.end = time.perf_counter()
    return out


async def run_load(target: Target, requests: Sequence[Request], *, duration: float,
                   arrival: str = "closed", concurrency: int = 32, ramp: float = 0.0,
                   timeout: float = 300.0) -> tuple[list[Outcome], tuple[float, float]]:
    """Send requests for `ramp` + `duration` seconds; in-flight ones finish.

    Returns every outcome and the measurement window (end of the ramp, end of sending): the
    first requests of 32 clients arrive together, and the last ones drain with ever fewer
    in flight; neither is the steady state `summarize` reports.
    """
    limits = httpx.Limits(max_connections=max(concurrency, 64) + 8,
                          max_keepalive_connections=max(concurrency, 64) + 8)
    outcomes: list[Outcome] = []
    counter = itertools.count()
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        t0 = time.perf_counter()
        deadline = t0 + ramp + duration
        if arrival == "closed":
            async def client_loop() -> None:
                while time.perf_counter() < deadline:
                    serial = next(counter)
                    req = requests[serial % len(requests)]
                    out = await send_one(client, target, body_for(target, req, serial))
                    out.adapter = req.adapter
                    outcomes.append(out)

            await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        elif arrival == "poisson":
            async def one(serial: int, req: Request) -> Outcome:
                out = await send_one(client, target, body_for(target, req, serial))
                out.adapter = req.adapter
                return out

            tasks = []
            for serial, req in enumerate(requests):
                if req.at >= ramp + duration:
                    break
                await asyncio.sleep(max(0.0, t0 + req.at - time.perf_counter()))
                tasks.append(asyncio.create_task(one(serial, req)))
            outcomes = list(await asyncio.gather(*tasks))
        else:
            raise ValueError(f"unknown arrival {arrival!r} (closed or poisson)")
    return outcomes, (t0 + ramp, deadline)


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 2)


def adapter_fairness(outcomes: Sequence[Outcome], adapters: int) -> dict:
    """Whether rare adapters wait longer: the p99 time to first token of the rarest tenth
    of `adapters` (the highest indices, the tail of a Zipf popularity; at least one adapter)
    pooled, against the median over adapters of each adapter's own p99. Popularity is by
    index, not by what the window happened to see, so a starved adapter still counts."""
    by: dict[int, list[float]] = {}
    for o in outcomes:
        if o.adapter is not None and o.ttft is not None:
            by.setdefault(o.adapter, []).append(o.ttft)
    if len(by) < 2:
        return {}
    first_rare = adapters - max(1, adapters // 10)
    rare = [t for a, ts in by.items() if a >= first_rare for t in ts]
    median_p99 = statistics.median(quantile(ts, 0.99) for ts in by.values())
    rare_p99 = quantile(rare, 0.99)
    return {
        "adapters_seen": len(by),
        "rare_tenth_requests": len(rare),
        "rare_tenth_ttft_p99_ms": _ms(rare_p99),
        "median_adapter_ttft_p99_ms": _ms(median_p99),
        "rare_to_median_p99": (round(rare_p99 / median_p99, 3)
                               if rare_p99 is not None and median_p99 else None),
    }


def summarize(outcomes: Sequence[Outcome], window: tuple[float, float],
              adapters: int | None = None) -> dict:
    """Throughput: tokens that arrived and requests that finished inside the window.
    Latencies: requests that started inside it. Errors: all of them. With `adapters` (how
    many the workload draws from), also the per-adapter fairness of `adapter_fairness`."""
    lo, hi = window
    wall = hi - lo
    ok = [o for o in outcomes if o.ok]
    tokens = 0.0
    for o in ok:  # a chunk may carry more than one token: weight chunks by usage
        if not o.times:  # invisible tokens: no arrival times, counted as none
            continue
        inside = sum(1 for t in o.times if lo <= t <= hi)
        tokens += inside * o.tokens / len(o.times)
    finished = sum(1 for o in ok if lo <= o.end <= hi)
    good = [o for o in ok if lo <= o.start <= hi]
    ttft = [o.ttft for o in good if o.ttft is not None]
    gaps = list(itertools.chain.from_iterable(o.gaps for o in good))
    e2e = [o.end - o.start for o in good]
    errors = Counter(o.error for o in outcomes if not o.ok)
    return {
        "requests": len(good),
        "finished_in_window": finished,
        "errors": sum(errors.values()),
        "error_kinds": dict(errors.most_common(5)),
        "invisible_outputs": sum(1 for o in good if o.invisible),
        "wall_s": round(wall, 2),
        "req_per_s": round(finished / wall, 3) if wall > 0 else 0.0,
        "tok_per_s": round(tokens / wall, 1) if wall > 0 else 0.0,
        "output_tokens": round(tokens),
        **{f"ttft_p{q}_ms": _ms(quantile(ttft, q / 100)) for q in (50, 95, 99)},
        **{f"itl_p{q}_ms": _ms(quantile(gaps, q / 100)) for q in (50, 95, 99)},
        **{f"e2e_p{q}_ms": _ms(quantile(e2e, q / 100)) for q in (50, 95, 99)},
        "ttft_mean_ms": _ms(statistics.fmean(ttft)) if ttft else None,
        **(adapter_fairness(good, adapters) if adapters else {}),
    }
