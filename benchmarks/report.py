"""results.json -> results.md, chart.png, and the ratios printed last."""

from __future__ import annotations

import statistics
from pathlib import Path

__all__ = ["LABELS", "chart", "markdown", "median_summary", "ratios"]

LABELS = {
    "vllm": "(a) vLLM OpenAI server",
    "naive": "(b) naive transformers+peft",
    "loraswap": "(c) loraswap, adapter named",
    "loraswap-routed": "(d) loraswap, experiment alias + log",
    "loraswap-ray": "(e) loraswap on Ray Serve, engine replicas",
}
_COLUMNS = [("req_per_s", "req/s"), ("tok_per_s", "out tok/s"), ("ttft_p50_ms", "TTFT p50"),
            ("ttft_p95_ms", "TTFT p95"), ("ttft_p99_ms", "TTFT p99"), ("itl_p50_ms", "ITL p50"),
            ("itl_p95_ms", "ITL p95"), ("itl_p99_ms", "ITL p99"), ("e2e_p95_ms", "e2e p95"),
            ("rare_to_median_p99", "rarest tenth / median adapter, TTFT p99"),
            ("errors", "errors")]


def median_summary(runs: list[dict]) -> dict:
    """Per metric, the median over rounds (errors: the sum)."""
    out: dict = {"rounds": len(runs)}
    for key in runs[0]:
        values = [r[key] for r in runs if isinstance(r.get(key), int | float)]
        if key in ("errors", "requests", "output_tokens", "finished_in_window"):
            out[key] = sum(values)
        elif values:
            out[key] = round(statistics.median(values), 3)
    return out


def ratios(medians: dict) -> list[dict]:
    """loraswap/vLLM and loraswap/naive per adapter count (throughput up, latency down)."""
    rows = []
    ls = medians.get("loraswap", {})
    for count in sorted(ls, key=int):
        mine = ls[count]
        for peer in ("vllm", "naive"):
            other = medians.get(peer, {}).get(count)
            if not other:
                continue
            row = {"adapters": int(count), "vs": peer}
            for key in ("tok_per_s", "req_per_s", "ttft_p95_ms", "itl_p95_ms", "e2e_p95_ms"):
                a, b = mine.get(key), other.get(key)
                row[key] = round(a / b, 3) if a and b else None
            rows.append(row)
        for variant, label in (("loraswap-routed", "routed (d)/(c)"),
                               ("loraswap-ray", "ray (e)/(c)")):
            theirs = medians.get(variant, {}).get(count)
            if theirs:
                row = {"adapters": int(count), "vs": label}
                for key in ("tok_per_s", "req_per_s", "ttft_p95_ms", "itl_p95_ms",
                            "e2e_p95_ms"):
                    a, b = theirs.get(key), mine.get(key)
                    row[key] = round(a / b, 3) if a and b else None
                rows.append(row)
    return rows


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}"
    return str(v)


def markdown(results: dict) -> str:
    cfg = results["config"]
    lines = [f"# loraswap benchmark {results['started_at']} ({cfg['mode']} mode)", "",
             f"Workload: {cfg['workload']['popularity']} popularity, {cfg['workload']['arrival']} "
             f"arrivals, concurrency {cfg['workload']['concurrency']}, prompts "
             f"{cfg['workload']['prompt_chars']} chars, outputs {cfg['workload']['output_tokens']} "
             f"tokens (ignore_eos), {cfg['duration']} s per measurement after a {cfg.get('ramp', 0):g} s "
             f"ramp (not counted), {cfg['rounds']} round(s), "
             f"seed {cfg['workload']['seed']}. Engine limits: {cfg['limits']}"
             + (f"; loraswap's max_loras: {cfg['loraswap_max_loras']}"
                if cfg.get("loraswap_max_loras") not in (None, cfg["limits"].get("max_loras"))
                else "")
             + (f", engine environment {cfg['engine_env']}" if cfg.get("engine_env") else "")
             + ". Machine: "
             f"{results['machine']['cpus']} CPUs, load average before "
             f"{results['machine']['load_before']}, after {results['machine'].get('load_after')}.",
             "", "Latencies in ms; medians over rounds.", "",
             "| system | adapters | " + " | ".join(h for _, h in _COLUMNS) + " |",
             "|---|---:|" + "---:|" * len(_COLUMNS)]
    for system, per_count in results["medians"].items():
        for count in sorted(per_count, key=int):
            m = per_count[count]
            lines.append(f"| {LABELS.get(system, system)} | {count} | "
                         + " | ".join(_fmt(m.get(k)) for k, _ in _COLUMNS) + " |")
    if results.get("unavailable"):
        lines += ["", "Not measured:"]
        lines += [f"- {LABELS.get(k, k)}: {v}" for k, v in results["unavailable"].items()]
    hs = results.get("hot_swap") or {}
    if hs:
        lines += ["", "## Hot-swap (idle server; median over trials)", "",
                  "| system | trials | register ms | register -> first token ms | cold TTFT ms "
                  "| warm TTFT ms |", "|---|---:|---:|---:|---:|---:|"]
        for system, s in hs.items():
            lines.append(f"| {system} | {s.get('trials', 0)} | {_fmt(s.get('register_ms'))} | "
                         f"{_fmt(s.get('register_to_first_token_ms'))} | "
                         f"{_fmt(s.get('cold_ttft_ms'))} | {_fmt(s.get('warm_ttft_ms'))} |")
    ro = results.get("routing")
    if ro:
        lines += ["", "## Routing overhead ((d) vs (c), single-token requests, one at a time)",
                  ""]
        if "error" in ro:
            lines.append(f"Not measured: {ro['error']}")
        else:
            lines.append(f"{ro['pairs']} pairs: direct p50 {ro['direct_p50_ms']} ms, alias p50 "
                         f"{ro['alias_p50_ms']} ms, overhead at p50 {ro['overhead_p50_ms']} ms "
                         f"(median paired difference {ro['paired_diff_median_ms']} ms).")
    lines += ["", "## Ratios (loraswap (c) over the peer; throughput: higher is better, "
              "latency: lower is better)", "",
              "| adapters | over | tok/s | req/s | TTFT p95 | ITL p95 | e2e p95 |",
              "|---:|---|---:|---:|---:|---:|---:|"]
    for r in results["ratios"]:
        lines.append(f"| {r['adapters']} | {r['vs']} | {_fmt(r['tok_per_s'])} | "
                     f"{_fmt(r['req_per_s'])} | {_fmt(r['ttft_p95_ms'])} | "
                     f"{_fmt(r['itl_p95_ms'])} | {_fmt(r['e2e_p95_ms'])} |")
    return "\n".join(lines) + "\n"


def chart(results: dict, path: Path) -> str:
    """Throughput and p95 TTFT against adapter count per system (matplotlib, else Pillow)."""
    series = {}
    for system, per_count in results["medians"].items():
        counts = sorted(per_count, key=int)
        series[LABELS.get(system, system)] = (
            [int(c) for c in counts], [per_count[c].get("tok_per_s") or 0 for c in counts],
            [per_count[c].get("ttft_p95_ms") or 0 for c in counts])
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return _chart_pillow(series, path)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, (xs, tput, p95) in series.items():
        ax1.plot(xs, tput, marker="o", label=label)
        ax2.plot(xs, p95, marker="o", label=label)
    for ax, title in ((ax1, "output tokens/s"), (ax2, "TTFT p95 (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("adapters in the workload")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    ax2.set_yscale("log")
    ax1.legend(fontsize=8)
    fig.suptitle(f"loraswap benchmark {results['started_at']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return "matplotlib"


def _chart_pillow(series: dict, path: Path) -> str:
    from PIL import Image, ImageDraw

    w, h, pad = 1100, 440, 60
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    colors = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]
    xs_all = sorted({x for xs, _, _ in series.values() for x in xs}) or [1]
    for panel, (idx, title) in enumerate(((1, "output tokens/s"), (2, "TTFT p95 (ms)"))):
        x0, x1 = pad + panel * w // 2, (panel + 1) * w // 2 - 20
        y0, y1 = 40, h - pad
        d.rectangle([x0, y0, x1, y1], outline="black")
        d.text((x0, 15), title, fill="black")
        top = max((max(v[idx]) for v in series.values() if v[idx]), default=1) or 1
        d.text((x0 - 50, y0), f"{top:,.0f}", fill="black")

        def px(x, y, x0=x0, x1=x1, y0=y0, y1=y1, top=top):
            i = xs_all.index(x)
            fx = x0 + 20 + (x1 - x0 - 40) * (i / max(1, len(xs_all) - 1))
            return fx, y1 - (y1 - y0) * (y / top)

        for x in xs_all:
            d.text((px(x, 0)[0] - 4, y1 + 5), str(x), fill="black")
        for k, (label, vals) in enumerate(series.items()):
            pts = [px(x, y) for x, y in zip(vals[0], vals[idx], strict=False)]
            if len(pts) > 1:
                d.line(pts, fill=colors[k % len(colors)], width=2)
            for p in pts:
                d.ellipse([p[0] - 3, p[1] - 3, p[0] + 3, p[1] + 3], fill=colors[k % len(colors)])
            if panel == 0:
                d.text((x0 + 10, y0 + 8 + 14 * k), label, fill=colors[k % len(colors)])
    img.save(path)
    return "pillow"
