"""Run the benchmark: every system started here, measured in alternation, results written.

    .venv/bin/python -m benchmarks.run --quick     # < 3 min: adapters {1, 8}, 16 clients
    .venv/bin/python -m benchmarks.run             # full: adapters {1, 8, 64}, 32 clients, 2 rounds
    .venv/bin/python -m benchmarks.run --adapter-counts 8 --concurrency 32 --rounds 3

Each round starts one system at a time (vLLM, loraswap, naive; reversed on odd rounds),
warms it up, measures every adapter count, stops it. Only ratios measured in the same run
mean anything on a shared machine. Output: bench-results/<timestamp>/ results.json,
results.md, chart.png, and the servers' logs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from benchmarks import report
from benchmarks.adapters_gen import adapter_name, make_adapters
from benchmarks.base_gen import SIZES, make_base
from benchmarks.loadgen import Target, run_load, send_one, summarize
from benchmarks.scenarios import hot_swap, routing_overhead
from benchmarks.systems import (
    BASE_ID,
    Server,
    create_experiments,
    engine_limits,
    loraswap_ray_server,
    loraswap_server,
    loraswap_settings,
    naive_server,
    register_adapters,
    stop_all,
    vllm_server,
)
from benchmarks.workload import WorkloadSpec, make_requests
from loraswap.settings import Settings, specs
from server.lora_slots import choose_max_loras

__all__ = ["main", "run"]

ROOT = Path(__file__).resolve().parent.parent
PRESETS = {
    "smoke": dict(adapter_counts=[1, 4], concurrency=4, duration=2.0, rounds=1, hot_swap=1,
                  routing_pairs=10, output_tokens=(16, 32)),
    "quick": dict(adapter_counts=[1, 8], concurrency=16, duration=8.0, rounds=1, hot_swap=2,
                  routing_pairs=30, output_tokens=(32, 96)),
    "full": dict(adapter_counts=[1, 8, 64], concurrency=32, duration=30.0, rounds=2, hot_swap=3,
                 routing_pairs=200, output_tokens=(32, 128)),
}
SYSTEMS = ("vllm", "loraswap", "naive", "loraswap-ray")  # the order of a round
HOT_SWAP_FIRST = 900  # adapter indices never in the workload
# Engine settings the harness exposes as its own flags (help and type from the settings
# declaration), with the harness's default where it differs from the server's; both engines
# get them. max_lora_rank is --rank (also the generated adapters' rank); max_cpu_loras is
# derived from the adapter counts.
ENGINE_FLAGS = {"max_loras": 8, "max_model_len": None, "max_num_seqs": None,
                "kv_cache_gib": None}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", dest="mode", const="quick")
    mode.add_argument("--smoke", action="store_const", dest="mode", const="smoke",
                      help="the smallest run that exercises everything (CI)")
    mode.add_argument("--full", action="store_const", dest="mode", const="full")
    p.add_argument("--adapter-counts", type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--concurrency", type=int)
    p.add_argument("--duration", type=float, help="seconds per measurement")
    p.add_argument("--rounds", type=int)
    p.add_argument("--systems", default="vllm,loraswap,naive",
                   help="comma list of vllm, loraswap (measures (c) and (d)), naive, "
                   "loraswap-ray ((e): loraswap on Ray Serve, --ray-replicas engines)")
    p.add_argument("--ray-replicas", type=int, default=2,
                   help="engine replicas of the loraswap-ray system")
    p.add_argument("--popularity", choices=["uniform", "zipf"], default="uniform")
    p.add_argument("--zipf-alpha", type=float, default=1.0)
    p.add_argument("--arrival", choices=["closed", "poisson"], default="closed")
    p.add_argument("--rate", type=float, default=20.0, help="poisson: requests per second")
    p.add_argument("--prompt-chars", type=lambda s: tuple(int(x) for x in s.split(",")),
                   default=(32, 160), help="min,max prompt length in characters (~tokens)")
    p.add_argument("--output-tokens", type=lambda s: tuple(int(x) for x in s.split(",")),
                   help="min,max output tokens")
    p.add_argument("--naive-duration", type=float,
                   help="seconds per naive measurement (default: --duration)")
    for spec in specs():
        if spec.name in ENGINE_FLAGS:
            default = ENGINE_FLAGS[spec.name]
            shown = default if default is not None else f"${spec.env} or {spec.default}"
            p.add_argument(spec.flag, type=spec.annotation, default=default,
                           help=f"{spec.help} Both engines. Default: {shown}")
    p.add_argument("--loraswap-max-loras", type=_slots,
                   help="loraswap's max_loras when it should differ from the peer's "
                   "(--max-loras): a number, or `auto` (its default; server/lora_slots.py), "
                   "since its kernels cost only the slots a batch uses")
    p.add_argument("--rank", type=int, default=8,
                   help="the generated adapters' rank, and both engines' max_lora_rank")
    p.add_argument("--hot-swap", type=int, help="hot-swap trials per system")
    p.add_argument("--routing-pairs", type=int)
    p.add_argument("--engine-env", action="append", default=[], metavar="KEY=VALUE",
                   help="an environment variable for both engines, (a) and (c)/(d) alike, e.g. "
                   "VLLM_ENABLE_V1_MULTIPROCESSING=0 (repeatable). Default: "
                   "VLLM_CPU_OMP_THREADS_BIND=<every CPU> (see _all_cpus)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", action="store_true",
                   help="py-spy each server (and its engine core) during every measurement: "
                   "logs/profile-*.txt, collapsed stacks (perturbs the numbers)")
    p.add_argument("--base", type=Path, help="base model dir (default: the embedded base)")
    p.add_argument("--base-size", choices=list(SIZES),
                   help="serve a random-weight Llama of this size (built once, cached) on the "
                   "embedded tokenizer instead of the 1.3 M-parameter embedded base; see "
                   "benchmarks/base_gen.py for why the size matters")
    p.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = p.parse_args(argv)
    args.mode = args.mode or "full"
    for key, value in PRESETS[args.mode].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


AUTO = "auto"


def _slots(text: str) -> int | str:
    if text == AUTO:
        return AUTO
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("a slot count is at least 1")
    return value


def _all_cpus() -> str:
    """Every CPU this process may use, in vLLM's bind syntax ("0-1").

    vLLM's CPU worker binds to all cores but one by default, keeping one for the frontend;
    on a 2-core machine that leaves half the arithmetic unused (measured: 20 M base,
    8 adapters, 32 clients, 221 -> 360 tok/s with both cores). The harness gives both
    engines every core; `--engine-env VLLM_CPU_OMP_THREADS_BIND=auto` restores vLLM's choice.
    """
    cpus = sorted(os.sched_getaffinity(0))
    ranges, start = [], cpus[0]
    for prev, cur in zip(cpus, cpus[1:] + [None], strict=True):
        if cur != prev + 1:
            ranges.append(f"{start}-{prev}" if prev != start else str(start))
            start = cur
    return ",".join(ranges)


def _base_dir(args: argparse.Namespace) -> Path:
    if args.base and not args.base_size:
        return args.base.expanduser().resolve()
    embedded = (args.base.expanduser().resolve() if args.base
                else Settings.from_env().base_model_dir)
    if args.base_size:
        return make_base(embedded, args.out / "cache", args.base_size, seed=args.seed).resolve()
    return embedded


async def _warm_up(target: Target, counts: int, concurrency: int) -> None:
    """Each adapter once (loads it), then a short burst at the measured concurrency."""
    import httpx

    from benchmarks.loadgen import body_for
    from benchmarks.workload import Request

    async with httpx.AsyncClient(timeout=300) as client:
        sem = asyncio.Semaphore(8)

        async def one(i: int, serial: int) -> None:
            async with sem:
                out = await send_one(client, target, body_for(
                    target, Request(i, "copy: warm up", 4, 0.0), serial))
                if not out.ok:
                    raise RuntimeError(f"warm-up of {target.name} failed: {out.error}")

        await asyncio.gather(*(one(i, i) for i in range(counts)))
    spec = WorkloadSpec(adapters=counts, concurrency=concurrency, output_tokens=(8, 16), seed=99)
    await run_load(target, make_requests(spec, 4 * concurrency), duration=1.0,
                   concurrency=concurrency)


async def _measure(target: Target, spec: WorkloadSpec, duration: float,
                   profile: tuple[Server, Path] | None = None) -> dict:
    requests = make_requests(spec, 20_000)
    load_before = os.getloadavg()[0]
    spy = None
    if profile is not None:
        server, out = profile
        out.parent.mkdir(parents=True, exist_ok=True)
        spy = subprocess.Popen(
            [str(Path(sys.executable).with_name("py-spy")), "record", "-p", str(server.proc.pid),
             "--subprocesses", "--format", "raw", "-r", "50", "-d", str(int(duration)),
             "--nonblocking", "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    outcomes, window = await run_load(target, requests, duration=duration,
                                      arrival=spec.arrival, concurrency=spec.concurrency,
                                      ramp=min(5.0, duration / 5))
    if spy is not None:
        await asyncio.to_thread(spy.wait)
    summary = summarize(outcomes, window, spec.adapters)
    summary["load_before"] = round(load_before, 2)
    return summary


def _hs_median(trials: list[dict]) -> dict:
    ok = [t for t in trials if "error" not in t]
    out: dict = {"trials": len(ok), "errors": [t["error"] for t in trials if "error" in t]}
    for key in ("register_ms", "register_to_first_token_ms", "cold_ttft_ms", "warm_ttft_ms"):
        if ok:
            out[key] = round(statistics.median(t[key] for t in ok), 2)
    return out


class Bench:
    def __init__(self, args: argparse.Namespace, out_dir: Path) -> None:
        self.args = args
        self.out_dir = out_dir
        self.base = _base_dir(args)
        self.max_count = max(args.adapter_counts)
        cache = args.out / "cache"
        paths = make_adapters(self.base, cache, self.max_count, rank=args.rank, seed=args.seed)
        self.adapters = {adapter_name(i): p for i, p in enumerate(paths)}
        hs_paths = make_adapters(self.base, cache, max(args.hot_swap, 0), rank=args.rank,
                                 seed=args.seed, first=HOT_SWAP_FIRST) if args.hot_swap else []
        self.hot = [{adapter_name(HOT_SWAP_FIRST + i) + f"-{system}": p
                     for i, p in enumerate(hs_paths)} for system in ("vllm", "loraswap")]
        # The shared engine limits, as settings: vLLM gets them as flags, loraswap as its
        # environment (benchmarks.systems).
        self.limits = Settings.from_env(
            base_model=self.base, base_model_name=BASE_ID, max_lora_rank=args.rank,
            max_cpu_loras=max(self.max_count + args.hot_swap, args.max_loras,
                              0 if args.loraswap_max_loras in (None, AUTO)
                              else args.loraswap_max_loras),
            **{name: getattr(args, name) for name in ENGINE_FLAGS})
        self.engine_env = {"VLLM_CPU_OMP_THREADS_BIND": _all_cpus(),
                           **dict(item.split("=", 1) for item in args.engine_env)}
        self.runs: list[dict] = []
        self.hot_swap: dict[str, list[dict]] = {}
        self.routing: list[dict] = []
        self.unavailable: dict[str, str] = {}
        self.start_seconds: dict[str, list[float]] = {}

    def spec(self, count: int, rnd: int = 0, routed: bool = False) -> WorkloadSpec:
        """The workload of one measurement. Every system gets the same requests for a given
        round and adapter count, but no measurement repeats an earlier one's prompts: the
        engines' prefix caches would serve a repeat from cache (the naive server has none)."""
        a = self.args
        return WorkloadSpec(adapters=count, popularity=a.popularity, zipf_alpha=a.zipf_alpha,
                            arrival=a.arrival, concurrency=a.concurrency, rate=a.rate,
                            prompt_chars=a.prompt_chars, output_tokens=a.output_tokens,
                            seed=a.seed * 1_000_003 + rnd * 1_000 + count * 2 + int(routed))

    def _record(self, rnd: int, system: str, count: int, summary: dict) -> None:
        self.runs.append({"round": rnd, "system": system, "adapters": count, **summary})
        log(f"  {system:<16} adapters={count:<3} {summary['tok_per_s']:>9,.0f} tok/s "
            f"{summary['req_per_s']:>7.2f} req/s  TTFT p95 {summary['ttft_p95_ms']} ms  "
            f"errors {summary['errors']}  (load {summary['load_before']})")

    def _profile(self, server: Server, rnd: int, system: str,
                 count: int) -> tuple[Server, Path] | None:
        if not self.args.profile:
            return None
        return server, self.out_dir / "logs" / f"profile-{system}-{count}-round{rnd}.txt"

    def _start(self, server: Server) -> None:
        log(f"starting {server.name} on :{server.port}")
        server.start()
        self.start_seconds.setdefault(server.name, []).append(round(server.start_seconds, 1))
        log(f"{server.name} ready in {server.start_seconds:.1f} s")

    async def run_vllm(self, rnd: int) -> None:
        logs = self.out_dir / "logs" / f"round{rnd}"
        server = vllm_server(self.base, self.adapters, self.limits, logs)
        server.env.update(self.engine_env)
        names = list(self.adapters)
        target = Target("vllm", server.url, lambda i: names[i])
        try:
            self._start(server)
            await _warm_up(target, self.max_count, self.args.concurrency)
            for count in self.args.adapter_counts:
                self._record(rnd, "vllm", count, await _measure(
                    target, self.spec(count, rnd), self.args.duration,
                    self._profile(server, rnd, "vllm", count)))
            if self.args.hot_swap and rnd == 0:
                self.hot_swap["vllm"] = await hot_swap("vllm", server.url, self.hot[0])
        finally:
            server.stop()

    @property
    def loraswap_limits(self) -> Settings:
        own = self.args.loraswap_max_loras
        if own is None:
            return self.limits
        return self.limits.replace(max_loras=None if own == AUTO else own)

    def loraswap_slots(self) -> int | str:
        """loraswap's slot count, with how auto chose it (the server's own rule, for a
        machine with our CPU kernels on)."""
        limits = loraswap_settings(self.loraswap_limits, self.out_dir)
        if limits.max_loras is not None:
            return limits.max_loras
        choice = choose_max_loras(self.base, max_lora_rank=limits.max_lora_rank,
                                  max_num_seqs=limits.max_num_seqs,
                                  max_cpu_loras=limits.max_cpu_loras,
                                  budget_gib=limits.lora_slots_gib, dtype=limits.dtype,
                                  cpu=True, idle_slots_free=limits.cpu_lora_kernels)
        return f"auto: {choice.max_loras} ({choice.reason})"

    async def run_loraswap(self, rnd: int) -> None:
        home = self.out_dir / f"home-round{rnd}"
        settings = loraswap_settings(self.loraswap_limits, home)
        register_adapters(settings, self.adapters)
        names = list(self.adapters)
        aliases: dict[str, str] = {}
        try:
            aliases = create_experiments(settings, names)
        except Exception as exc:  # the router not there yet: (d) is reported as not measured
            self.unavailable["loraswap-routed"] = f"creating experiments failed: {exc!r}"
        server = loraswap_server(settings, self.out_dir / "logs" / f"round{rnd}")
        server.env.update(self.engine_env)
        direct = Target("loraswap", server.url, lambda i: names[i])
        routed = Target("loraswap-routed", server.url, lambda i: aliases[names[i]],
                        user_per_request=True)
        try:
            self._start(server)
            await _warm_up(direct, self.max_count, self.args.concurrency)
            if aliases:
                probe = await send_one_probe(routed)
                if probe:
                    self.unavailable["loraswap-routed"] = probe
                    aliases = {}
            for k, count in enumerate(self.args.adapter_counts):
                order = [direct, routed] if aliases else [direct]
                if (k + rnd) % 2 and aliases:
                    order.reverse()
                for target in order:
                    self._record(rnd, target.name, count, await _measure(
                        target, self.spec(count, rnd, target is routed), self.args.duration,
                        self._profile(server, rnd, target.name, count)))
            if aliases and self.args.routing_pairs:
                self.routing.append(await routing_overhead(
                    server.url, names[0], aliases[names[0]], self.args.routing_pairs))
                log(f"  routing overhead: {self.routing[-1]}")
            if self.args.hot_swap and rnd == 0:
                self.hot_swap["loraswap"] = await hot_swap("loraswap", server.url, self.hot[1])
        finally:
            server.stop()

    async def run_naive(self, rnd: int) -> None:
        server = naive_server(self.base, self.adapters, self.out_dir / "logs" / f"round{rnd}")
        await self._run_named(server, "naive", rnd, min(4, self.args.concurrency),
                              self.args.naive_duration or self.args.duration)

    async def _run_named(self, server: Server, system: str, rnd: int, warm_concurrency: int,
                         duration: float) -> None:
        """Start `server`, warm it up, measure every adapter count with requests naming
        the adapters, stop it."""
        names = list(self.adapters)
        target = Target(system, server.url, lambda i: names[i])
        try:
            self._start(server)
            await _warm_up(target, self.max_count, warm_concurrency)
            for count in self.args.adapter_counts:
                self._record(rnd, system, count, await _measure(
                    target, self.spec(count, rnd), duration,
                    self._profile(server, rnd, system, count)))
        finally:
            server.stop()

    async def run_loraswap_ray(self, rnd: int) -> None:
        """(e): the adapters named directly, as (c), through Ray Serve's proxy, the ingress
        and `--ray-replicas` engine replicas with adapter-affinity routing."""
        home = self.out_dir / f"home-ray-round{rnd}"
        settings = loraswap_settings(self.loraswap_limits, home)
        register_adapters(settings, self.adapters)
        server = loraswap_ray_server(settings, self.out_dir / "logs" / f"round{rnd}",
                                     self.args.ray_replicas)
        server.env.update(self.engine_env)
        server.env.pop("VLLM_CPU_OMP_THREADS_BIND", None)  # each replica binds its own cores
        await self._run_named(server, "loraswap-ray", rnd, self.args.concurrency,
                              self.args.duration)

    async def run(self) -> None:
        order = [s for s in SYSTEMS if s in self.args.systems.split(",")]
        for rnd in range(self.args.rounds):
            log(f"round {rnd + 1}/{self.args.rounds}")
            for system in (order if rnd % 2 == 0 else order[::-1]):
                await getattr(self, f"run_{system.replace('-', '_')}")(rnd)


async def send_one_probe(target: Target) -> str | None:
    """None if the alias serves; else why not (e.g. the router is not wired in yet)."""
    import httpx

    from benchmarks.loadgen import body_for
    from benchmarks.workload import Request

    async with httpx.AsyncClient(timeout=60) as client:
        out = await send_one(client, target, body_for(target, Request(0, "copy: probe", 2, 0),
                                                      0))
    return None if out.ok else f"experiment alias not served: {out.error}"


def run(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    started = time.strftime("%Y%m%d-%H%M%S")
    out_dir = args.out / started
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    load_before = [round(x, 2) for x in os.getloadavg()]
    log(f"{args.mode} mode -> {out_dir} (load average {load_before})")
    bench = Bench(args, out_dir)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    # Servers run in their own process groups: a signal to us must still stop them. (SIGINT
    # too: a background job in a non-interactive shell starts with SIGINT ignored.)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)
    try:
        asyncio.run(bench.run())
    finally:
        stop_all()
    medians: dict[str, dict[str, dict]] = {}
    for system in ("vllm", "loraswap", "loraswap-routed", "naive", "loraswap-ray"):
        for count in args.adapter_counts:
            runs = [{k: v for k, v in r.items() if k not in ("round", "system", "adapters")}
                    for r in bench.runs if r["system"] == system and r["adapters"] == count]
            if runs:
                medians.setdefault(system, {})[str(count)] = report.median_summary(runs)
    routing = bench.routing
    results = {
        "started_at": started,
        "config": {"mode": args.mode, "duration": args.duration,
                   "ramp": min(5.0, args.duration / 5), "rounds": args.rounds,
                   "adapter_counts": args.adapter_counts, "systems": args.systems,
                   "workload": asdict(bench.spec(max(args.adapter_counts))),
                   "limits": engine_limits(bench.limits),
                   "loraswap_max_loras": bench.loraswap_slots(),
                   "limits_note": "loraswap runs with max_cpu_loras + 1 (its CPU base guard's "
                                  "zero adapter); this workload sends no base requests",
                   "base": str(bench.base), "base_size": args.base_size or "embedded",
                   "rank": args.rank,
                   "engine_env": bench.engine_env},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "load_before": load_before,
                    "load_after": [round(x, 2) for x in os.getloadavg()]},
        "start_seconds": bench.start_seconds,
        "runs": bench.runs,
        "medians": medians,
        "hot_swap": {s: _hs_median(t) for s, t in bench.hot_swap.items()},
        "hot_swap_trials": bench.hot_swap,
        "routing": _routing_median(routing) if routing else None,
        "routing_rounds": routing,
        "unavailable": bench.unavailable,
        "wall_s": round(time.monotonic() - t0, 1),
    }
    results["ratios"] = report.ratios(medians)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    results["chart_backend"] = report.chart(results, out_dir / "chart.png")
    (out_dir / "results.md").write_text(report.markdown(results))
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    print(report.markdown(results))
    print(f"results: {out_dir} ({results['wall_s']} s)")
    print("ratios (loraswap (c) / peer):")
    for r in results["ratios"]:
        print(f"  adapters={r['adapters']:<3} {r['vs']:<15} throughput x{r['tok_per_s']}  "
              f"TTFT p95 x{r['ttft_p95_ms']}  ITL p95 x{r['itl_p95_ms']}")
    return out_dir


def _routing_median(rounds: list[dict]) -> dict:
    ok = [r for r in rounds if "error" not in r]
    if not ok:
        return rounds[-1]
    out = {"pairs": sum(r["pairs"] for r in ok), "errors": sum(r["errors"] for r in ok)}
    for key in ok[0]:
        if key not in out:
            out[key] = round(statistics.median(r[key] for r in ok), 3)
    return out


def main() -> None:
    run()


if __name__ == "__main__":
    main()
