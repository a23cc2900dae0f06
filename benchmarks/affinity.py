"""Adapter-affinity routing against Ray Serve's plain routing, in one run.

    .venv/bin/python -m benchmarks.affinity                      # 32 adapters, Zipf 1, 2 replicas
    .venv/bin/python -m benchmarks.affinity --cache 4 --duration 60

The same scaled-out server (`loraswap serve --replicas 2`, docs/scaling.md) is started twice,
once with `affinity_routing` on (Serve's model multiplexing: a request goes to a replica that
holds its adapter) and once off (any replica), and driven with the same closed-loop Zipf
workload: the same seed, the same requests. Each replica has `--slots` LoRA slots
(max_loras, adapters in one batch) and keeps `--cache` adapters loaded (max_cpu_loras).

Measured per mode, over the measurement window after a warm-up: adapter loads per 1,000
requests (the replicas' own counters, /admin/engine), TTFT p50/p95, throughput and errors.
Output: bench-results/affinity-<timestamp>/ results.json, results.md, chart.png, logs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import httpx

from benchmarks.adapters_gen import adapter_name, make_adapters
from benchmarks.loadgen import Target, run_load, summarize
from benchmarks.workload import WorkloadSpec, make_requests

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
BASE_ID = "loraswap-base"
MODES = ("plain", "affinity")


def log(msg: str) -> None:
    print(f"[affinity {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _loads(url: str) -> tuple[int, list[dict]]:
    replicas = httpx.get(f"{url}/admin/engine", timeout=60).json()["replicas"]
    return sum(r["adapter_loads"] for r in replicas), replicas


def measure(mode: str, args: argparse.Namespace, base: Path, adapters: list[Path],
            out: Path) -> dict:
    from loraswap.launcher import free_port, serve_command, start_process

    home = out / f"home-{mode}"
    port = free_port()
    env = {"LORASWAP_HOME": str(home), "LORASWAP_BASE_MODEL": str(base),
           "LORASWAP_MAX_LORAS": str(args.slots),
           # the CPU base guard's zero adapter takes one cache entry on each replica
           "LORASWAP_MAX_CPU_LORAS": str(args.cache + 1),
           "LORASWAP_MAX_LORA_RANK": str(args.rank), "LORASWAP_MAX_MODEL_LEN": "512",
           "LORASWAP_AFFINITY_ROUTING": "1" if mode == "affinity" else "0"}
    log(f"{mode}: starting 2 engine replicas on Ray Serve")
    server = start_process(serve_command(port, "--base-model-name", BASE_ID, "--replicas",
                                         str(args.replicas)),
                           port=port, log=out / f"{mode}.log", env=env, cwd=ROOT,
                           timeout=600, name=f"loraswap-{mode}", own_group=True)
    try:
        for i, path in enumerate(adapters):
            r = httpx.post(f"{server.url}/admin/adapters", json={
                "name": adapter_name(i), "path": str(path)}, timeout=120)
            r.raise_for_status()
        spec = WorkloadSpec(adapters=len(adapters), popularity="zipf",
                            zipf_alpha=args.zipf_alpha, concurrency=args.concurrency,
                            output_tokens=(16, 48), seed=args.seed)
        requests = make_requests(spec, 5000)
        target = Target(f"loraswap-{mode}", server.url, lambda i: f"{adapter_name(i)}@1")
        log(f"{mode}: warm-up {args.warmup:.0f} s")
        asyncio.run(run_load(target, requests, duration=args.warmup,
                             concurrency=args.concurrency))
        before, _ = _loads(server.url)
        log(f"{mode}: measuring {args.duration:.0f} s, {args.concurrency} clients")
        outcomes, window = asyncio.run(run_load(target, requests[::-1], duration=args.duration,
                                                concurrency=args.concurrency))
        after, replicas = _loads(server.url)
    finally:
        server.stop(timeout=90)
    summary = summarize(outcomes, window)
    answered = sum(1 for o in outcomes if o.ok)
    loads = after - before
    summary.update(mode=mode, loads=loads, answered=answered,
                   loads_per_1000=round(1000 * loads / max(answered, 1), 1),
                   per_replica=[{"replica": r["replica"], "adapter_loads": r["adapter_loads"],
                                 "holds": len(r["loaded"])} for r in replicas])
    log(f"{mode}: {loads} loads for {answered} requests ({summary['loads_per_1000']}/1000), "
        f"TTFT p95 {summary['ttft_p95_ms']} ms, {summary['errors']} errors")
    return summary


def _markdown(meta: dict, rows: dict[str, dict]) -> str:
    lines = [f"# Affinity routing: {meta['adapters']} adapters, Zipf {meta['zipf_alpha']}, "
             f"{meta['replicas']} replicas x {meta['slots']} slots, cache {meta['cache']}",
             "", f"`{meta['command']}`", "",
             "| routing | requests | adapter loads / 1,000 req | TTFT p50 ms | TTFT p95 ms "
             "| tok/s | errors |", "|---|---|---|---|---|---|---|"]
    for mode, r in rows.items():
        lines.append(f"| {mode} | {r['answered']} | {r['loads_per_1000']} | {r['ttft_p50_ms']} "
                     f"| {r['ttft_p95_ms']} | {r['tok_per_s']} | {r['errors']} |")
    lines += ["", f"Loads, affinity / plain: **{meta['loads_ratio']}**; TTFT p95, affinity / "
              f"plain: **{meta['ttft_p95_ratio']}**.", ""]
    return "\n".join(lines)


def _chart(rows: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    modes = list(rows)
    colors = ["#999999", "#2a7ab0"]
    for ax, key, title in ((axes[0], "loads_per_1000", "adapter loads per 1,000 requests"),
                           (axes[1], "ttft_p95_ms", "TTFT p95 (ms)")):
        values = [rows[m][key] or 0 for m in modes]
        ax.bar(modes, values, color=colors)
        ax.set_title(title, fontsize=10)
        for i, v in enumerate(values):
            ax.text(i, v, f"{v:g}", ha="center", va="bottom", fontsize=9)
    fig.suptitle("Ray Serve: plain routing vs adapter affinity (same run)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.affinity", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--adapters", type=int, default=32)
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--slots", type=int, default=4, help="max_loras per replica")
    p.add_argument("--cache", type=int, default=16,
                   help="adapters each replica keeps loaded (max_cpu_loras, not counting the "
                   "CPU base guard's)")
    p.add_argument("--zipf-alpha", type=float, default=1.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--warmup", type=float, default=15.0)
    p.add_argument("--duration", type=float, default=45.0)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = p.parse_args(argv)
    from loraswap.settings import Settings

    base = Settings.from_env().base_model_dir
    out = args.out / time.strftime("affinity-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    adapters = make_adapters(base, args.out / "cache", args.adapters,
                             rank=args.rank, seed=args.seed)
    rows = {mode: measure(mode, args, base, adapters, out) for mode in MODES}
    plain, aff = rows["plain"], rows["affinity"]
    meta = {"adapters": args.adapters, "zipf_alpha": args.zipf_alpha, "replicas": args.replicas,
            "slots": args.slots, "cache": args.cache, "concurrency": args.concurrency,
            "duration_s": args.duration, "command": "python -m benchmarks.affinity "
            + " ".join(argv if argv is not None else sys.argv[1:]),
            "loads_ratio": round(aff["loads_per_1000"] / plain["loads_per_1000"], 3)
            if plain["loads_per_1000"] else None,
            "ttft_p95_ratio": round(aff["ttft_p95_ms"] / plain["ttft_p95_ms"], 3)
            if plain["ttft_p95_ms"] and aff["ttft_p95_ms"] else None}
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    (out / "results.md").write_text(_markdown(meta, rows))
    _chart(rows, out / "chart.png")
    print(_markdown(meta, rows))
    log(f"results in {out}")
    return 0 if not (plain["errors"] or aff["errors"]) else 1


if __name__ == "__main__":
    sys.exit(main())
